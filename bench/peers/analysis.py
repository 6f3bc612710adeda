# ruff: noqa: RUF001  (the notes are prose, with typographic signs on purpose)
"""From a peers run's raw segments to its figures: medians over rounds, the sweep, the mock's ceiling,
the stream waves, memory, and one verdict row per design.md target.

The per-round statistics are ``bench.overhead.analysis``'s (added latency pairs each target with
the direct calls of its own round; figures are medians over rounds). What is new here: the
concurrency sweep (the req/s a target sustains while its added p99 stays within 5 and 10 ms), the
mock's ceiling at each concurrency, the waves of 1,000 streams, and the target table, where each row
holds our figure, LiteLLM's, the floor's, our figure over LiteLLM's, and whether the target is met.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from bench.overhead import analysis as oa

__all__ = ["TARGETS", "summarize"]

Json = dict[str, Any]
TARGETS = ("direct", "passthrough", "sidecar", "litellm")
PROXIES = ("passthrough", "sidecar", "litellm")
P99_BOUNDS_MS = (5.0, 10.0)
MAX_ERROR_RATE = 0.001  # a level with more errors than this does not count as sustained
ROOT = Path(__file__).resolve().parents[2]


def _sweep(segments: list[Json], levels: list[int]) -> Json:
    return {str(c): oa.nonstream(segments, c, targets=TARGETS, phase="sweep") for c in levels}


def _sustained(sweep: Json) -> Json:
    """Per proxy and p99 bound: the highest req/s over the levels whose added p99 stays within it."""
    out: Json = {}
    for target in PROXIES:
        out[target] = {}
        for bound in P99_BOUNDS_MS:
            best: Json = {"rps": 0.0, "concurrency": None, "added_p99_ms": None, "error_rate": None}
            for conc, rows in sweep.items():
                row = rows.get(target)
                if row is None or math.isnan(row["added_p99_ms"]) or row["added_p99_ms"] > bound:
                    continue
                if (row["error_rate"] or 0.0) > MAX_ERROR_RATE or row["served_rps"] <= best["rps"]:
                    continue
                best = {
                    "rps": row["served_rps"],
                    "concurrency": int(conc),
                    "added_p99_ms": row["added_p99_ms"],
                    "error_rate": row["error_rate"],
                }
            out[target][f"{bound:g}"] = best
    return out


def _peak(sweep: Json) -> Json:
    out: Json = {}
    for target in TARGETS:
        rows = [(int(c), r[target]) for c, r in sweep.items() if target in r]
        if not rows:
            continue
        conc, row = max(rows, key=lambda cr: cr[1]["served_rps"])
        out[target] = {
            "rps": row["served_rps"],
            "concurrency": conc,
            "p99_ms": row["p99_ms"],
            "error_rate": row["error_rate"],
            "cpu_us_per_request": row["cpu_us_per_request"],
        }
    return out


def _mock_ceiling(sweep: Json) -> Json:
    """The mock alone (direct), same client, same core, at each level, against what the proxies drew."""
    out: Json = {}
    for conc, rows in sweep.items():
        direct = rows.get("direct")
        if direct is None:
            continue
        busiest = max((rows[t]["served_rps"] for t in PROXIES if t in rows), default=math.nan)
        out[conc] = {
            "rps": direct["served_rps"],
            "p99_ms": direct["p99_ms"],
            "mock_cpu_us_per_request": direct["cpu_us_per_request"],
            "mock_capacity_rps": 1e6 / direct["cpu_us_per_request"]
            if direct["cpu_us_per_request"]
            else math.nan,
            "load_core_busy": direct["load_core_busy"],
            "busiest_proxy_rps": busiest,
            "busiest_proxy_share": oa.ratio(busiest, direct["served_rps"]),
            "errors": direct["errors"],
        }
    return out


def _medians(rows: list[Json]) -> Any:
    def med(key: str) -> float:
        return oa.median([float(r[key]) if r.get(key) is not None else math.nan for r in rows])

    return med


def _added(paired: list[Json], direct: dict[int, Json]) -> Any:
    def added(key: str) -> float:
        return oa.median([w[key] - direct[w["round"]][key] for w in paired])

    return added


def _waves(waves: list[Json]) -> Json:
    direct = {w["round"]: w for w in waves if w["target"] == "direct"}
    out: Json = {}
    for target in TARGETS:
        mine = [w for w in waves if w["target"] == target]
        if not mine:
            continue
        paired = [w for w in mine if w["round"] in direct]
        med = _medians(mine)
        added = _added(paired, direct)

        out[target] = {
            "streams": mine[0]["concurrency"],
            "completed": med("completed"),
            "errors": sum(w["errors"] for w in mine),
            "incomplete": sum(w["incomplete"] for w in mine),
            "ttft_p50_ms": med("ttft_p50_ms"),
            "ttft_p99_ms": med("ttft_p99_ms"),
            "added_ttft_p50_ms": added("ttft_p50_ms"),
            "added_ttft_p99_ms": added("ttft_p99_ms"),
            "gap_p50_ms": med("gap_p50_ms"),
            "gap_p99_ms": med("gap_p99_ms"),
            "added_gap_p99_ms": added("gap_p99_ms"),
            "interval_ms": mine[0].get("interval_ms"),
            "rss_before_mb": med("rss_before_mb"),
            "rss_peak_mb": med("rss_peak_mb"),
            "rss_after_mb": med("rss_after_mb"),
            "cpu_us_per_event": med("cpu_us_per_event"),
            "server_core_foreign": med("server_core_foreign"),
        }
    return out


def _foreign(segments: list[Json]) -> Json:
    """Median share of each core taken by processes other than ours, per phase (the noise)."""
    out: Json = {}
    for phase in ("c1", "sweep"):
        rows = [s for s in segments if s["phase"] == phase]
        out[phase] = {
            "server_core": oa.median(
                [s.get("server_core_foreign", math.nan) for s in rows if s["target"] != "direct"]
            ),
            "load_core": oa.median([s.get("load_core_foreign", math.nan) for s in rows]),
            "server_core_max": max((s.get("server_core_foreign", 0.0) for s in rows), default=math.nan),
        }
    return out


def _tracked(folder: str) -> set[str]:
    try:
        done = subprocess.run(
            ["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(done.stdout.split())


def _other_benches() -> Json:
    """Targets this bench does not measure, from the newest result file of the bench that does."""
    files = sorted((ROOT / "bench" / "results").glob("propagation-*.json"))
    committed = [f for f in files if f.relative_to(ROOT).as_posix() in _tracked("bench/results")]
    files = committed or files  # a committed result, not a run someone has in progress
    if not files:
        return {}
    data = json.loads(files[-1].read_text())
    out: Json = {"file": str(files[-1].relative_to(ROOT))}
    ack = data.get("apply_to_ack", {})
    # The target names 1,000 sidecars; a run that measured more sizes still reports that one.
    size = "1000" if "1000" in ack else max(ack, key=int, default=None)
    if size is not None:
        out["propagation"] = {"sidecars": int(size), "p99_ms": ack[size]["apply_to_ack"]["p99_ms"]}
    routes = data.get("routes_to_programmed")
    if routes:
        out["operator_scale"] = {"routes": routes.get("routes"), "seconds": routes.get("to_programmed_s")}
    over = data.get("overshoot")
    if over:
        out["overshoot"] = {
            k: over.get(k) for k in ("sidecars", "overshoot_usd", "bound_usd", "largest_request_usd")
        }
    return out


def _row(
    target: str, limit: str, *, ours: float | None, peer: float | None, floor: float | None,
    unit: str, met: bool | None, ratio: float | None = None, note: str = "",
) -> Json:  # fmt: skip
    if ratio is None and ours is not None and peer:
        ratio = ours / peer
    return {
        "target": target, "limit": limit, "unit": unit, "ours": ours, "litellm": peer, "floor": floor,
        "ours_over_litellm": ratio, "met": met, "note": note,
    }  # fmt: skip


def _get(d: Json, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _n(x: Any, digits: int = 2) -> str:
    return "n/a" if _nan(x) else f"{x:.{digits}f}"


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _rows(s: Json) -> list[Json]:
    c1, peak, waves, streams, rss = s["c1"], s["peak"], s["waves"], s["streaming"], s["rss_mb"]
    rows: list[Json] = []
    for key, bound in (("added_p50_ms", 1.3), ("added_p99_ms", 1.5)):
        quant = key.split("_")[1]
        ours, peer, floor = (_get(c1, t, key) for t in ("sidecar", "litellm", "passthrough"))
        ratio_ours = _get(c1, "sidecar", f"{key.removesuffix('_ms')}_vs_passthrough")
        rows.append(
            _row(
                f"added latency at concurrency 1, {quant}", f"≤ {bound}× the floor's",
                ours=ours, peer=peer, floor=floor, unit="ms",
                met=None if _nan(ratio_ours) else ratio_ours <= bound,
                note=f"ours {_n(ratio_ours)}× the floor's; LiteLLM {_n(_get(c1, 'litellm', key.removesuffix('_ms') + '_vs_passthrough'), 1)}×",
            )
        )  # fmt: skip
    ours, peer, floor = (_get(peak, t, "rps") for t in ("sidecar", "litellm", "passthrough"))
    share = oa.ratio(ours, floor) if ours and floor else math.nan
    rows.append(
        _row(
            "throughput, one core, non-streaming", "≥ 0.6× the floor's", ours=ours, peer=peer, floor=floor,
            unit="req/s", met=None if math.isnan(share) else share >= 0.6,
            note=f"peak over the sweep; ours {_n(share)}× the floor's (at c={_get(peak, 'sidecar', 'concurrency')})",
        )
    )  # fmt: skip
    times = oa.ratio(ours, peer) if ours and peer else math.nan
    rows.append(
        _row(
            "throughput against LiteLLM proxy, 1 worker", "≥ 30× LiteLLM's", ours=ours, peer=peer, floor=floor,
            unit="req/s", met=None if math.isnan(times) else times >= 30,
            note=f"ours {_n(times, 0)}× LiteLLM's; the floor {_n(oa.ratio(floor, peer), 0)}×" if peer and floor else "",
        )
    )  # fmt: skip
    n = _get(waves, "sidecar", "streams") or 1000
    ours, peer, floor = (_get(waves, t, "completed") for t in ("sidecar", "litellm", "passthrough"))
    rows.append(
        _row(
            f"{n:,} concurrent streams per core", f"all {n:,} complete", ours=ours, peer=peer, floor=floor,
            unit="streams", met=None if _nan(ours) else ours >= n,
            note="completed in one wave started over 1 s, 20 tokens at 100 ms each",
        )
    )  # fmt: skip
    ours, peer, floor = (_get(streams, t, "added_ttft_p50_ms") for t in ("sidecar", "litellm", "passthrough"))
    rows.append(
        _row(
            "added time to first token, 50 streams, p50", "≤ 2 ms", ours=ours, peer=peer, floor=floor,
            unit="ms", met=None if _nan(ours) else ours <= 2.0,
        )
    )  # fmt: skip
    ours, peer, floor = (_get(waves, t, "added_ttft_p50_ms") for t in ("sidecar", "litellm", "passthrough"))
    rows.append(
        _row(
            f"added time to first token, {n:,} streams, p50", "≤ 2 ms", ours=ours, peer=peer, floor=floor,
            unit="ms", met=None if _nan(ours) else ours <= 2.0,
            note="the whole wave on one core: mostly queueing for that core",
        )
    )  # fmt: skip
    for mode, name in (("standalone", "sidecar"), ("operator-fed", "sidecar-operator")):
        ours = _get(rss, name, "idle_start")
        rows.append(
            _row(
                f"RSS idle, {mode} mode", "≤ 60 MB", ours=ours, peer=_get(rss, "litellm", "idle_start"),
                floor=_get(rss, "passthrough", "idle_start"), unit="MB", met=None if _nan(ours) else ours <= 60.0,
            )
        )  # fmt: skip
    ours, peer, floor = (_get(waves, t, "rss_peak_mb") for t in ("sidecar", "litellm", "passthrough"))
    rows.append(
        _row(
            f"RSS at {n:,} streams (peak)", "≤ 150 MB", ours=ours, peer=peer, floor=floor, unit="MB",
            met=None if _nan(ours) else ours <= 150.0,
        )
    )  # fmt: skip
    other = s.get("other_benches", {})
    src = f"`{other['file']}` (bench.propagation, not this run)" if other else "no bench.propagation result"
    prop = other.get("propagation")
    rows.append(
        _row(
            "config propagation, apply → 1,000 sidecars ACKed, p99", "≤ 1,000 ms",
            ours=prop["p99_ms"] if prop else None, peer=None, floor=None, unit="ms",
            met=None if not prop else prop["p99_ms"] <= 1000 and prop["sidecars"] >= 1000, note=src,
        )
    )  # fmt: skip
    over = other.get("overshoot")
    rows.append(
        _row(
            "hard budget overshoot, 50 sidecars", "≤ one request's cost per sidecar",
            ours=over["overshoot_usd"] if over else None, peer=None, floor=None, unit="USD",
            met=None if not over else over["overshoot_usd"] <= over["bound_usd"],
            note=src if over else "not in the stored results: run `make bench-propagation`",
        )
    )  # fmt: skip
    scale = other.get("operator_scale")
    rows.append(
        _row(
            "operator scale, 1,000 LLMRoutes to Programmed", "≤ 60 s on 2 cores",
            ours=scale["seconds"] if scale else None, peer=None, floor=None, unit="s",
            met=None if not scale else scale["seconds"] <= 60, note=src,
        )
    )  # fmt: skip
    return rows


def summarize(result: Json) -> Json:
    segments: list[Json] = result["segments"]
    levels = sorted({s["concurrency"] for s in segments if s["phase"] == "sweep"})
    sweep = _sweep(segments, levels)
    summary: Json = {
        "c1": oa.nonstream(segments, 1, targets=TARGETS, phase="c1"),
        "sweep": sweep,
        "sustained": _sustained(sweep),
        "peak": _peak(sweep),
        "mock_ceiling": _mock_ceiling(sweep),
        "streaming": oa.streaming(segments, targets=TARGETS),
        "waves": _waves(result.get("waves", [])),
        "rss_mb": result.get("rss_mb", {}),
        "foreign": _foreign(segments),
        "other_benches": _other_benches(),
    }
    summary["targets"] = _rows(summary)
    return summary
