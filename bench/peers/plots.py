"""PNG plots of a peers run (matplotlib, Agg): concurrency 1, the concurrency sweep, the stream waves.

``render(result, summary, img_dir)`` writes ``peers-latency.png``, ``peers-sweep.png`` and
``peers-streams.png`` and returns their paths.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.overhead.plots import _bars, _cdf

__all__ = ["render"]

Json = dict[str, Any]
COLORS = {"direct": "#7f7f7f", "passthrough": "#1f77b4", "sidecar": "#2ca02c", "litellm": "#d62728"}
LABELS = {
    "direct": "direct (mock ceiling)",
    "passthrough": "floor (passthrough)",
    "sidecar": "sidecar",
    "litellm": "LiteLLM",
}


def _subtitle(result: Json) -> str:
    meta = result["meta"]
    plan = meta["plan"]
    return (
        f"{meta['started']} · {meta['cpu']} · load+mock on core 0, server on core 1 · LiteLLM "
        f"{meta['versions'].get('litellm')} · c=1: {plan['c1_rounds']} rounds x {plan['c1_seconds']:g}s, "
        f"sweep: {plan['sweep_rounds']} rounds x {plan['sweep_seconds']:g}s per level · medians over rounds"
    )


def _save(fig: Any, result: Json, title: str, path: Path) -> Path:
    fig.suptitle(title, fontsize=12)
    fig.text(0.5, 0.005, _subtitle(result), ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency(result: Json, summary: Json, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    _bars(axes[0], summary["c1"], ("p50_ms", "p99_ms"), ("p50", "p99"), "latency, ms", COLORS)
    axes[0].set_title("non-streaming latency, concurrency 1", fontsize=10)
    _cdf(axes[1], result, "c1", "1", "latency CDF, concurrency 1 (all rounds pooled)", COLORS)
    axes[1].set_xlabel("latency, ms (log)")
    return _save(fig, result, "llmroute sidecar vs the floor and LiteLLM proxy: concurrency 1", path)


def _sweep(result: Json, summary: Json, path: Path) -> Path:
    sweep = summary["sweep"]
    levels = [int(c) for c in sweep]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    for target, color in COLORS.items():
        xs = [c for c in levels if target in sweep[str(c)]]
        rows = [sweep[str(c)][target] for c in xs]
        axes[0].plot(xs, [r["served_rps"] for r in rows], marker="o", color=color, label=LABELS[target])
        if target != "direct":
            axes[1].plot(
                xs,
                [max(r["added_p99_ms"], 1e-3) for r in rows],
                marker="o",
                color=color,
                label=LABELS[target],
            )
            axes[2].plot(
                xs, [r["error_rate"] * 100 for r in rows], marker="o", color=color, label=LABELS[target]
            )
    axes[0].set_ylabel("requests/s served (one core; direct: the mock on the load core)")
    axes[0].set_title("throughput by concurrency", fontsize=10)
    axes[1].set_ylabel("added p99 latency, ms (log)")
    axes[1].set_title("added p99 by concurrency (dotted: 5 and 10 ms)", fontsize=10)
    for bound in (5, 10):
        axes[1].axhline(bound, color="black", linewidth=0.6, linestyle=":")
    axes[2].set_ylabel("errors, % of requests")
    axes[2].set_title("error rate by concurrency", fontsize=10)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency (closed loop, keep-alive connections)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    return _save(
        fig, result, "concurrency sweep 1-256: the mock, the floor, the sidecar and LiteLLM proxy", path
    )


def _streams(result: Json, summary: Json, path: Path) -> Path:
    waves = summary["waves"]
    targets = list(waves)
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    panels = (
        (("ttft_p50_ms", "ttft_p99_ms"), "time to first token, ms (log)", "TTFT in the wave"),
        (
            ("gap_p50_ms", "gap_p99_ms"),
            "gap between chunks, ms (log)",
            "inter-chunk gaps (mock: one chunk per 100 ms)",
        ),
        (("rss_before_mb", "rss_peak_mb", "rss_after_mb"), "RSS, MB", "memory: before, peak, 2 s after"),
    )
    for ax, (keys, unit, title) in zip(axes, panels, strict=True):
        width = 0.8 / len(keys)
        for i, target in enumerate(targets):
            for j, key in enumerate(keys):
                value = waves[target].get(key)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                x = i + (j - (len(keys) - 1) / 2) * width
                ax.bar(
                    x,
                    value,
                    width,
                    color=COLORS.get(target),
                    alpha=1.0 - 0.3 * j,
                    edgecolor="black",
                    linewidth=0.3,
                )
                ax.annotate(f"{value:.3g}", (x, value), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(targets)), [LABELS[t] for t in targets], rotation=12, fontsize=8)
        ax.set_ylabel(unit)
        ax.set_title(
            f"{title} ({' / '.join(k.split('_')[-2] if k.startswith('rss') else k.split('_')[1] for k in keys)})",
            fontsize=9,
        )
        ax.grid(axis="y", alpha=0.3, which="both")
        if "log" in unit:
            ax.set_yscale("log")
    for i, target in enumerate(targets):
        row = waves[target]
        axes[0].annotate(f"{row['completed']:.0f}/{row['streams']} done", (i, 0.01), xycoords=("data", "axes fraction"),
                         ha="center", va="bottom", fontsize=7, fontweight="bold")  # fmt: skip
    n = next(iter(waves.values()))["streams"] if waves else 0
    return _save(fig, result, f"one wave of {n:,} concurrent streams per target (started over 1 s)", path)


def render(result: Json, summary: Json, img_dir: Path) -> list[Path]:
    img_dir.mkdir(parents=True, exist_ok=True)
    return [
        _latency(result, summary, img_dir / "peers-latency.png"),
        _sweep(result, summary, img_dir / "peers-sweep.png"),
        _streams(result, summary, img_dir / "peers-streams.png"),
    ]
