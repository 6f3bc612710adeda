"""PNG plots of a results JSON (matplotlib, Agg): latency, throughput and CPU, streaming.

``render(result, img_dir)`` writes ``overhead-latency.png`` (p50/p99 bars and the latency CDF at each
concurrency), ``overhead-throughput.png`` (req/s with the spread over rounds, CPU per request) and
``overhead-streaming.png`` (time to first token, and the many-streams wave) and returns their paths.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["render"]

Json = dict[str, Any]
COLORS = {
    "direct": "#7f7f7f",
    "passthrough": "#1f77b4",
    "sidecar-httptools": "#9467bd",
    "sidecar-aiohttp": "#2ca02c",
    "sidecar-httpx": "#d62728",
}


def _bars(
    ax: Any, rows: Json, keys: tuple[str, str], labels: tuple[str, str], unit: str, colors: Json | None = None
) -> None:
    colors = colors or COLORS
    targets = list(rows)
    width = 0.38
    for i, target in enumerate(targets):
        for j, (key, label) in enumerate(zip(keys, labels, strict=True)):
            value = rows[target][key]
            x = i + (j - 0.5) * width
            ax.bar(
                x,
                value,
                width,
                color=colors.get(target, "#999"),
                alpha=1.0 if j == 0 else 0.55,
                hatch="" if j == 0 else "//",
                edgecolor="white" if j == 0 else "black",
                linewidth=0.5,
                label=label if i == 0 else None,
            )
            if not math.isnan(value):
                ax.annotate(f"{value:.3g}", (x, value), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(targets)), targets, rotation=15, fontsize=8)
    values = [rows[t][k] for t in targets for k in keys if rows[t][k] > 0]
    if values and max(values) / min(values) > 30:
        ax.set_yscale("log")
        unit += " (log)"
    ax.set_ylabel(unit)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3, which="both")


def _cdf(ax: Any, result: Json, phase: str, conc: str, title: str, colors: Json | None = None) -> None:
    colors = colors or COLORS
    qs = result["meta"]["curve_quantiles"]
    for key, values in result["curves"].items():
        p, c, target = key.split("/")
        if p != phase or c != conc:
            continue
        ax.plot(values, [q * 100 for q in qs], label=target, color=colors.get(target), linewidth=1.3)
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log)" if phase == "nonstream" else "time to first token, ms (log)")
    ax.set_ylabel("percentile")
    ax.set_ylim(0, 100)
    ax.axhline(50, color="black", linewidth=0.4, linestyle=":")
    ax.axhline(99, color="black", linewidth=0.4, linestyle=":")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")


def _subtitle(result: Json) -> str:
    meta = result["meta"]
    plan = meta["plan"]
    return (
        f"{meta['started']} · {meta['cpu']} · load+mock on core 0, server on core 1 · "
        f"{plan['rounds']} interleaved rounds x {plan['seconds']:.0f}s per target and concurrency · medians over rounds"
    )


def render(result: Json, img_dir: Path) -> list[Path]:
    img_dir.mkdir(parents=True, exist_ok=True)
    summary = result["summary"]
    concs = list(summary["nonstream"])
    paths: list[Path] = []

    fig, axes = plt.subplots(2, len(concs), figsize=(6.5 * len(concs), 9), squeeze=False)
    for col, conc in enumerate(concs):
        rows = summary["nonstream"][conc]
        _bars(axes[0][col], rows, ("p50_ms", "p99_ms"), ("p50", "p99"), "latency, ms")
        axes[0][col].set_title(f"non-streaming latency, concurrency {conc}", fontsize=10)
        _cdf(axes[1][col], result, "nonstream", conc, f"latency CDF, concurrency {conc} (all rounds pooled)")
    fig.suptitle("llmroute sidecar overhead: latency", fontsize=12)
    fig.text(0.5, 0.005, _subtitle(result), ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    paths.append(img_dir / "overhead-latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    high = summary["nonstream"][concs[-1]]
    servers = [t for t in high if t != "direct"]
    ax = axes[0]
    for i, target in enumerate(servers):
        row = high[target]
        err = [[row["rps"] - row["rps_min"]], [row["rps_max"] - row["rps"]]]
        ax.bar(i, row["rps"], 0.6, color=COLORS.get(target), yerr=err, capsize=4)
        # What a core of its own would give: 1 s of CPU over the CPU one request costs.
        capacity = 1e6 / row["cpu_us_per_request"]
        ax.plot(
            [i],
            [capacity],
            marker="D",
            color="black",
            markersize=5,
            label="1 s / CPU per request" if i == 0 else None,
        )
        ratio = row.get("rps_vs_passthrough", math.nan)
        ax.annotate(
            f"{row['rps']:.0f} req/s ({ratio:.2f}x floor)\ncapacity {capacity:.0f}",
            (i + 0.32, row["rps"]), ha="left", va="center", fontsize=7,
        )  # fmt: skip
    ax.set_xticks(range(len(servers)), servers, fontsize=8)
    ax.set_ylabel("requests/s (one core)")
    ax.set_title(
        f"throughput at concurrency {concs[-1]} (bar: median, whisker: min-max over rounds)", fontsize=9
    )
    ax.legend(fontsize=7, loc="upper right")
    ax.set_xlim(-0.5, len(servers) - 0.1)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.2)
    ax = axes[1]
    width = 0.8 / len(concs)
    for j, conc in enumerate(concs):
        rows = summary["nonstream"][conc]
        for i, target in enumerate(servers):
            value = rows[target]["cpu_us_per_request"]
            x = i + (j - (len(concs) - 1) / 2) * width
            ax.bar(x, value, width, color=COLORS.get(target), alpha=1.0 if j else 0.55,
                   hatch="//" if not j else "", edgecolor="black", linewidth=0.4,
                   label=f"concurrency {conc}" if i == 0 else None)  # fmt: skip
            ax.annotate(f"{value:.0f}", (x, value), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(servers)), servers, fontsize=8)
    ax.set_ylabel("server CPU per request, µs")
    ax.set_title("CPU cost per request of the process under test", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("llmroute sidecar overhead: throughput and CPU", fontsize=12)
    fig.text(0.5, 0.005, _subtitle(result), ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    paths.append(img_dir / "overhead-throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if summary["streaming"]:
        many = summary.get("many_streams") or {}
        fig, axes = plt.subplots(1, 3 if many else 2, figsize=(18 if many else 12, 4.8))
        plan = result["meta"]["plan"]
        _bars(axes[0], summary["streaming"], ("ttft_p50_ms", "ttft_p99_ms"), ("TTFT p50", "TTFT p99"), "ms")
        axes[0].set_title(f"time to first token, {plan['stream_concurrency']} concurrent streams", fontsize=9)
        _cdf(axes[1], result, "stream", str(plan["stream_concurrency"]), "TTFT CDF (all rounds pooled)")
        if many:
            ax = axes[2]
            targets = list(many)
            for i, target in enumerate(targets):
                row = many[target]
                ax.bar(i, row["ttft_p99_ms"], 0.6, color=COLORS.get(target), alpha=0.55, hatch="//", edgecolor="black", linewidth=0.4,
                       label="TTFT p99" if i == 0 else None)  # fmt: skip
                ax.bar(
                    i, row["ttft_p50_ms"], 0.6, color=COLORS.get(target), label="TTFT p50" if i == 0 else None
                )
                rss = row.get("rss_peak_mb")
                note = f"{row['completed']}/{row['concurrency']} ok" + (f"\nRSS {rss:.0f} MB" if rss else "")
                ax.annotate(note, (i, row["ttft_p99_ms"]), ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(targets)), targets, rotation=15, fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("ms (log)")
            ax.margins(y=0.25)
            ax.set_title(
                f"one wave of {plan['many_streams']} concurrent streams (started over 1 s)", fontsize=9
            )
            ax.legend(fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle("llmroute sidecar overhead: streaming", fontsize=12)
        fig.text(0.5, 0.005, _subtitle(result), ha="center", fontsize=7)
        fig.tight_layout(rect=(0, 0.03, 1, 0.95))
        paths.append(img_dir / "overhead-streaming.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
