"""From raw segments to the figures design.md's targets are about: medians over rounds, added
latency against the direct calls of the same round, ratios against the bare passthrough, verdicts.

Robust by construction on a noisy machine: each figure is the median over rounds of per-round values
(a noisy round moves it little), and added latency pairs each target with the direct calls of its
own round. Added p99 is a difference of quantiles (p99(target) - p99(direct)), not a quantile of
differences. Used by ``run.py`` after a run and by ``--render`` on a saved JSON.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CURVE_Q",
    "TARGETS",
    "curve",
    "latency_stats",
    "markdown",
    "median",
    "nonstream",
    "quantile",
    "ratio",
    "streaming",
    "summarize",
]

TARGETS = ("direct", "passthrough", "sidecar-httptools", "sidecar-aiohttp", "sidecar-httpx")
SIDECARS = ("sidecar-httptools", "sidecar-aiohttp", "sidecar-httpx")
# Quantiles kept for the CDF plot: every 0.1% up to 99.9%, then the far tail.
CURVE_Q = [i / 1000 for i in range(1, 1000)] + [0.9995, 0.9999, 1.0]
Json = dict[str, Any]


def quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted sequence."""
    if not ordered:
        return math.nan
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


def latency_stats(latencies_ns: Sequence[int]) -> Json:
    ordered = sorted(latencies_ns)
    ms = [x / 1e6 for x in ordered]
    return {
        "n": len(ms),
        "p50_ms": quantile(ms, 0.5),
        "p90_ms": quantile(ms, 0.9),
        "p99_ms": quantile(ms, 0.99),
        "p999_ms": quantile(ms, 0.999),
        "max_ms": ms[-1] if ms else math.nan,
        "mean_ms": statistics.fmean(ms) if ms else math.nan,
    }


def curve(latencies_ns: Sequence[int]) -> list[float]:
    ordered = sorted(x / 1e6 for x in latencies_ns)
    return [round(quantile(ordered, q), 4) for q in CURVE_Q]


def _median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


# Public for bench.peers, which reuses these per-round statistics.
median = _median
ratio = _ratio


def nonstream(
    segments: list[Json], concurrency: int, *, targets: Sequence[str] = TARGETS, phase: str = "nonstream"
) -> Json:
    """Medians over rounds for one concurrency of one phase, paired with the direct calls per round."""
    rows = [s for s in segments if s["phase"] == phase and s["concurrency"] == concurrency]
    direct = {s["round"]: s for s in rows if s["target"] == "direct"}
    out: Json = {}
    for target in targets:
        mine = [s for s in rows if s["target"] == target]
        if not mine:
            continue
        paired = [s for s in mine if s["round"] in direct]
        out[target] = {
            "rounds": len(mine),
            "requests": sum(s["n"] for s in mine),
            "errors": sum(s["errors"] for s in mine),
            "p50_ms": _median([s["p50_ms"] for s in mine]),
            "p99_ms": _median([s["p99_ms"] for s in mine]),
            "added_p50_ms": _median([s["p50_ms"] - direct[s["round"]]["p50_ms"] for s in paired]),
            "added_p99_ms": _median([s["p99_ms"] - direct[s["round"]]["p99_ms"] for s in paired]),
            "rps": _median([s["rps"] for s in mine]),
            "served_rps": _median([s.get("served_rps", s["rps"]) for s in mine]),
            "error_rate": _ratio(sum(s["errors"] for s in mine), sum(s["n"] + s["errors"] for s in mine)),
            "rps_min": min(s["rps"] for s in mine),
            "rps_max": max(s["rps"] for s in mine),
            "cpu_us_per_request": _median([s["cpu_us_per_request"] for s in mine]),
            "server_core_busy": _median([s["server_core_busy"] for s in mine]),
            "load_core_busy": _median([s["load_core_busy"] for s in mine]),
            "server_core_foreign": _median([s.get("server_core_foreign", math.nan) for s in mine]),
            "load_core_foreign": _median([s.get("load_core_foreign", math.nan) for s in mine]),
            "rss_peak_mb": max((s.get("rss_peak_mb") or 0.0) for s in mine),
        }
    floor = out.get("passthrough")
    for target, row in out.items():
        if floor is None or target == "direct":
            continue
        row["added_p50_vs_passthrough"] = _ratio(row["added_p50_ms"], floor["added_p50_ms"])
        row["added_p99_vs_passthrough"] = _ratio(row["added_p99_ms"], floor["added_p99_ms"])
        row["p50_vs_passthrough"] = _ratio(row["p50_ms"], floor["p50_ms"])
        row["p99_vs_passthrough"] = _ratio(row["p99_ms"], floor["p99_ms"])
        row["rps_vs_passthrough"] = _ratio(row["rps"], floor["rps"])
        if "direct" in out:
            row["p50_vs_direct"] = _ratio(row["p50_ms"], out["direct"]["p50_ms"])
            row["p99_vs_direct"] = _ratio(row["p99_ms"], out["direct"]["p99_ms"])
    return out


def streaming(segments: list[Json], *, targets: Sequence[str] = TARGETS) -> Json:
    rows = [s for s in segments if s["phase"] == "stream"]
    direct = {s["round"]: s for s in rows if s["target"] == "direct"}
    out: Json = {}
    for target in targets:
        mine = [s for s in rows if s["target"] == target]
        if not mine:
            continue
        paired = [s for s in mine if s["round"] in direct]
        out[target] = {
            "streams": sum(s["n"] for s in mine),
            "errors": sum(s["errors"] + s["incomplete"] for s in mine),
            "ttft_p50_ms": _median([s["ttft_p50_ms"] for s in mine]),
            "ttft_p99_ms": _median([s["ttft_p99_ms"] for s in mine]),
            "added_ttft_p50_ms": _median(
                [s["ttft_p50_ms"] - direct[s["round"]]["ttft_p50_ms"] for s in paired]
            ),
            "added_ttft_p99_ms": _median(
                [s["ttft_p99_ms"] - direct[s["round"]]["ttft_p99_ms"] for s in paired]
            ),
            "stream_p50_ms": _median([s["total_p50_ms"] for s in mine]),
            "cpu_us_per_stream": _median([s["cpu_us_per_stream"] for s in mine]),
        }
    return out


def summarize(raw: Json) -> Json:
    """The summary block of a results JSON: per-phase figures plus design.md's verdicts."""
    segments: list[Json] = raw["segments"]
    concurrencies = sorted({s["concurrency"] for s in segments if s["phase"] == "nonstream"})
    summary: Json = {
        "nonstream": {str(c): nonstream(segments, c) for c in concurrencies},
        "streaming": streaming(segments),
        "many_streams": raw.get("many_streams", {}),
        "rss_mb": raw.get("rss_mb", {}),
        "import_rss": raw.get("import_rss", {}),
    }
    summary["verdicts"] = _verdicts(summary, concurrencies)
    return summary


def _check(name: str, value: float, limit: float, *, at_most: bool, unit: str = "") -> Json:
    ok = (value <= limit) if at_most else (value >= limit)
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "unit": unit,
        "pass": bool(ok) if not math.isnan(value) else None,
    }


def _verdicts(summary: Json, concurrencies: list[int]) -> Json:
    out: Json = {}
    low = summary["nonstream"].get(str(min(concurrencies))) if concurrencies else None
    high = summary["nonstream"].get(str(max(concurrencies))) if concurrencies else None
    for sidecar in SIDECARS:
        checks = []
        if low and sidecar in low:
            checks.append(
                _check(
                    "c=1 added p50 vs passthrough",
                    low[sidecar]["added_p50_vs_passthrough"],
                    1.3,
                    at_most=True,
                    unit="x",
                )
            )
            checks.append(
                _check(
                    "c=1 added p99 vs passthrough",
                    low[sidecar]["added_p99_vs_passthrough"],
                    1.5,
                    at_most=True,
                    unit="x",
                )
            )
        if high and sidecar in high:
            checks.append(
                _check(
                    f"c={max(concurrencies)} req/s vs passthrough",
                    high[sidecar]["rps_vs_passthrough"],
                    0.6,
                    at_most=False,
                    unit="x",
                )
            )
        stream = summary["streaming"].get(sidecar)
        if stream:
            checks.append(_check("added TTFT p50", stream["added_ttft_p50_ms"], 2.0, at_most=True, unit="ms"))
        rss = summary["rss_mb"].get(sidecar)
        if rss:
            checks.append(_check("RSS idle", rss["idle_start"], 60.0, at_most=True, unit="MB"))
        many = summary["many_streams"].get(sidecar)
        if many and many.get("concurrency", 0) >= 1000:
            checks.append(_check("RSS at 1,000 streams", many["rss_peak_mb"], 150.0, at_most=True, unit="MB"))
            checks.append(
                _check(
                    "1,000 streams completed",
                    many["completed"] / many["concurrency"],
                    1.0,
                    at_most=False,
                    unit="share",
                )
            )
        out[sidecar] = checks
    return out


def _fmt(value: float, digits: int = 2) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


def _x(ratio: float | None) -> str:
    return "-" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}x"


def markdown(summary: Json) -> str:
    """The tables of docs/performance.md, from a summary."""
    lines: list[str] = []
    for conc, rows in summary["nonstream"].items():
        lines += [
            f"**Non-streaming, concurrency {conc}** (medians over rounds)",
            "",
            "| target | p50 ms | p99 ms | added p50 ms | added p99 ms | added p50 / passthrough's | added p99 / passthrough's | req/s | req/s / passthrough | server CPU µs/req | server core: ours + foreign |",
            "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
        ]
        for target, r in rows.items():
            lines.append(
                f"| {target} | {_fmt(r['p50_ms'], 3)} | {_fmt(r['p99_ms'], 3)} | {_fmt(r['added_p50_ms'], 3)} | "
                f"{_fmt(r['added_p99_ms'], 3)} | {_x(r.get('added_p50_vs_passthrough'))} | "
                f"{_x(r.get('added_p99_vs_passthrough'))} | {r['rps']:.0f} | "
                f"{_x(r.get('rps_vs_passthrough'))} | {r['cpu_us_per_request']:.0f} | "
                + (
                    "(mock, core 0) |"
                    if target == "direct"
                    else f"{r['server_core_busy']:.0%} + {r.get('server_core_foreign', math.nan):.0%} |"
                )
            )
        lines.append("")
    if summary["streaming"]:
        lines += [
            "**Streaming** (medians over rounds)",
            "",
            "| target | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | added TTFT p99 ms | CPU µs/stream |",
            "| --- | --: | --: | --: | --: | --: |",
        ]
        for target, r in summary["streaming"].items():
            lines.append(
                f"| {target} | {_fmt(r['ttft_p50_ms'], 3)} | {_fmt(r['ttft_p99_ms'], 3)} | "
                f"{_fmt(r['added_ttft_p50_ms'], 3)} | {_fmt(r['added_ttft_p99_ms'], 3)} | {r['cpu_us_per_stream']:.0f} |"
            )
        lines.append("")
    if summary["many_streams"]:
        lines += [
            "**Many concurrent streams** (one wave)",
            "",
            "| target | streams | completed | TTFT p50 ms | TTFT p99 ms | RSS peak MB | server core busy | server CPU µs/SSE event |",
            "| --- | --: | --: | --: | --: | --: | --: | --: |",
        ]
        for target, r in summary["many_streams"].items():
            lines.append(
                f"| {target} | {r['concurrency']} | {r['completed']} | {_fmt(r['ttft_p50_ms'])} | "
                f"{_fmt(r['ttft_p99_ms'])} | {_fmt(r.get('rss_peak_mb'), 1)} | {_fmt(r.get('server_core_busy'))} | "
                f"{_fmt(r.get('cpu_us_per_event'), 0)} |"
            )
        lines.append("")
    if summary["rss_mb"]:
        lines += [
            "**RSS (MB)**",
            "",
            "| process | idle at start | peak under load | idle at the end |",
            "| --- | --: | --: | --: |",
        ]
        for target, r in summary["rss_mb"].items():
            lines.append(
                f"| {target} | {_fmt(r['idle_start'], 1)} | {_fmt(r['peak'], 1)} | {_fmt(r['idle_end'], 1)} |"
            )
        lines.append("")
    lines += [
        "**design.md targets**",
        "",
        "| sidecar | target | measured | limit | verdict |",
        "| --- | --- | --: | --: | --- |",
    ]
    for sidecar, checks in summary["verdicts"].items():
        for c in checks:
            verdict = {True: "pass", False: "**miss**", None: "n/a"}[c["pass"]]
            lines.append(
                f"| {sidecar} | {c['target']} | {_fmt(c['value'])} {c['unit']} | {c['limit']} {c['unit']} | {verdict} |"
            )
    return "\n".join(lines) + "\n"
