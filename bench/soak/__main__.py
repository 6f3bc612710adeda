"""``make soak``: ten minutes of steady mixed load with 5% upstream faults; is anything drifting?

A real ``llmroute-sidecar --config`` process in front of two fake OpenAI-compatible providers
(``python -m llmroute_fakes``), each failing 5% of its requests at random (the primary with 503s,
the fallback with connection resets); the route retries and falls back. Closed-loop clients from
``bench.overhead.loadgen`` send non-streaming and streaming chat completions side by side, and every
minute the soak records that minute's latency percentiles, errors, and the sidecar's RSS and CPU.

It passes when both are flat: the last minutes' p99 within ``--p99-drift`` (default 25%) of the
first minutes', and RSS growth after the first minute within ``--rss-growth`` MB (default 10),
on a machine whose noise is recorded (foreign CPU load per minute). Not part of ``make test``.
The sidecar's warnings (each failed request's attempts, breaker transitions) go into the JSON, so a
failure says why: with the fakes' fixed seed, around the 700,000th request the primary fails five
times in a row, its breaker ejects it for 30 s, and while only the fallback serves, a request fails
when all three of its attempts there are reset (0.05^3, about 5 of the ~40,000 in that window).

    python -m bench.soak                 # 10 minutes; JSON in bench/results/soak-<stamp>.json
    python -m bench.soak --minutes 1     # a short smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.overhead.analysis import latency_stats
from bench.overhead.loadgen import LoadResult, chat_body, run_load
from bench.overhead.procs import Fleet, core_busy_seconds, cpu_seconds, free_port, rss_mb

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"

ROUTE = """\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: soak, namespace: soak}}
spec:
  models:
  - name: chat
    backends: [primary, fallback]
  backends:
  - name: primary
    provider: openai-compatible
    model: soak-model
    endpoint: http://127.0.0.1:{primary}/v1
    region: local
    pricing: {{inputPerMillion: 2.0, outputPerMillion: 8.0}}
  - name: fallback
    provider: openai-compatible
    model: soak-model
    endpoint: http://127.0.0.1:{fallback}/v1
    region: local
    pricing: {{inputPerMillion: 2.0, outputPerMillion: 8.0}}
  resilience:
    retries: {{attempts: 2}}
"""


def _say(text: str) -> None:
    print(f"soak: {text}", flush=True)


def _fake(fleet: Fleet, name: str, mode: str, core: int) -> int:
    port = free_port()
    fleet.start(
        name,
        ["-m", "llmroute_fakes", "--protocol", "openai-compatible", "--port", str(port),
         "--fail-rate", "0.05", "--fail-mode", mode, "--seed", "7", "--slow-stream-ms", "5"],
        port=port, core=core,
    )  # fmt: skip
    return port


def _merge(results: list[LoadResult]) -> dict[str, Any]:
    latencies = [x for r in results for x in r.latencies_ns]
    statuses: dict[str, int] = {}
    for r in results:
        for status, count in r.statuses.items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    ok = len(latencies)
    errors = sum(r.errors for r in results)
    return {
        "requests": ok + errors,
        "errors": errors,
        "error_rate": errors / (ok + errors) if ok + errors else 0.0,
        "statuses": statuses,
        "latency": latency_stats(latencies),
    }


async def _soak(minutes: int, workdir: Path) -> dict[str, Any]:
    fleet = Fleet(workdir)
    try:
        primary = _fake(fleet, "primary", "status", core=1)
        fallback = _fake(fleet, "fallback", "reset", core=1)
        config = workdir / "route.yaml"
        config.write_text(ROUTE.format(primary=primary, fallback=fallback))
        port = free_port()
        sidecar = fleet.start(
            "sidecar",
            ["-m", "llmroute_sidecar", "--config", str(config), "--http-addr", f"127.0.0.1:{port}",
             "--grpc-addr", f"127.0.0.1:{free_port()}", "--admin-addr", f"127.0.0.1:{free_port()}",
             "--audit-log", "off", "--watch-seconds", "0", "--log-level", "warning"],
            port=port, core=0,
        )  # fmt: skip
        for proc in fleet.procs:
            await fleet.ready(proc)
        _say(f"sidecar pid {sidecar.pid} on :{port}; providers on :{primary} (503s) and :{fallback} (resets)")
        plain, streamed = chat_body(), chat_body(stream=True, tokens=16, interval_ms=5)
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        for minute in range(minutes):
            own = [p.pid for p in fleet.procs] + [os.getpid()]
            cpu0 = {pid: cpu_seconds(pid) for pid in own}
            busy0, wall0 = core_busy_seconds(0) + core_busy_seconds(1), time.monotonic()
            results = await asyncio.gather(
                run_load("127.0.0.1", port, concurrency=8, seconds=60, warmup=0, body=plain),
                run_load("127.0.0.1", port, concurrency=4, seconds=60, warmup=0, body=streamed),
            )
            wall = time.monotonic() - wall0
            ours = sum(cpu_seconds(pid) - cpu0[pid] for pid in own)
            busy = core_busy_seconds(0) + core_busy_seconds(1) - busy0
            sample: dict[str, Any] = {
                "minute": minute + 1,
                "plain": _merge([results[0]]),
                "stream": _merge([results[1]]),
                "all": _merge(list(results)),
                "sidecar_rss_mb": round(rss_mb(sidecar.pid), 1),
                "sidecar_cpu_s": round(cpu_seconds(sidecar.pid), 1),
                "foreign_cpu_share": round(max(0.0, busy - ours) / (2 * wall), 3),
            }
            samples.append(sample)
            lat = sample["all"]["latency"]
            _say(
                f"minute {minute + 1}/{minutes}: {sample['all']['requests']} requests, "
                f"{sample['all']['errors']} errors, p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, "
                f"RSS {sample['sidecar_rss_mb']} MB, foreign load {sample['foreign_cpu_share']:.0%}"
            )
            if not sidecar.alive():
                raise RuntimeError(f"the sidecar died:\n{sidecar.log.read_text()[-3000:]}")
        return {"samples": samples, "seconds": round(time.monotonic() - started, 1)}
    finally:
        fleet.stop()


def verdict(samples: list[dict[str, Any]], *, p99_drift: float, rss_growth: float) -> dict[str, Any]:
    """Flatness: each kind's p99 over the last third of the minutes against the first third, and RSS
    from the end of minute 1 (warm: caches, pools, allocator arenas) to the end."""
    third = max(1, len(samples) // 3)
    out: dict[str, Any] = {}
    for kind in ("plain", "stream"):
        first = statistics.median(s[kind]["latency"]["p99_ms"] for s in samples[:third])
        last = statistics.median(s[kind]["latency"]["p99_ms"] for s in samples[-third:])
        out[kind] = {
            "p99_first_ms": round(first, 2),
            "p99_last_ms": round(last, 2),
            "p99_drift": round(last / first - 1, 3) if first else 0.0,
            "p99_flat": bool(last <= first * (1 + p99_drift)),
        }
    rss = [s["sidecar_rss_mb"] for s in samples]
    errors = sum(s["all"]["errors"] for s in samples)
    requests = sum(s["all"]["requests"] for s in samples)
    out.update(
        rss_first_mb=rss[0],
        rss_last_mb=rss[-1],
        rss_growth_mb=round(rss[-1] - rss[0], 1),
        rss_flat=rss[-1] - rss[0] <= rss_growth,
        requests=requests,
        errors=errors,
        error_rate=round(errors / requests, 5) if requests else 0.0,
    )
    out["flat"] = out["plain"]["p99_flat"] and out["stream"]["p99_flat"] and out["rss_flat"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument(
        "--p99-drift", type=float, default=0.25, help="allowed p99 growth, last vs first third"
    )
    parser.add_argument(
        "--rss-growth", type=float, default=10.0, help="allowed RSS growth after minute 1 (MB)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llmroute-soak-") as tmp:
        run = asyncio.run(_soak(args.minutes, Path(tmp)))
        # Why requests failed, in the sidecar's own words (its warnings name every attempt's error).
        log = Path(tmp) / "sidecar.log"
        failures = [
            line
            for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
            if "WARNING" in line or "ERROR" in line
        ]
    result = {
        "meta": {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "minutes": args.minutes},
        **run,
        "verdict": verdict(run["samples"], p99_drift=args.p99_drift, rss_growth=args.rss_growth),
        "sidecar_warnings": failures[-50:],
        "sidecar_warning_count": len(failures),
    }
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M")
    out = args.out or RESULTS / f"soak-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    v = result["verdict"]
    drift = ", ".join(
        f"{kind} p99 {v[kind]['p99_first_ms']} -> {v[kind]['p99_last_ms']} ms ({v[kind]['p99_drift']:+.0%})"
        for kind in ("plain", "stream")
    )
    _say(
        f"{v['requests']} requests, error rate {v['error_rate']:.3%}; {drift}; "
        f"RSS {v['rss_first_mb']} -> {v['rss_last_mb']} MB; written to {out}"
    )
    _say("flat: p99 and RSS" if v["flat"] else "NOT flat: see the verdict in the JSON")
    return 0 if v["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
