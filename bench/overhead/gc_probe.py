"""What Python's garbage collector costs the sidecar under load, and what two remedies would save.

``python -m bench.overhead.gc_probe`` starts four copies of the real sidecar (core 1) beside the
fast mock (core 0) and runs 64-way non-streaming load at each in interleaved rounds:

- ``as-is``: the sidecar unchanged;
- ``usage-cap``: its usage buffer capped at 1,000 records (what a drained buffer looks like: in
  standalone mode nothing drains it, so it grows to its 100,000-record bound and every full
  collection walks it);
- ``freeze``: ``gc.collect(); gc.freeze()`` once the sidecar has started, so the start-up heap
  (modules, pydantic and protobuf objects, compiled config) leaves the collector's sight;
- ``freeze+cap``: both.

The variants are made by a wrapper (``serve``) that patches the started sidecar from outside; the
sidecar's code is not changed. The wrapper also times every collection with ``gc.callbacks`` and
dumps the totals on SIGUSR1. Results go to ``bench/results/gc-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import analysis, loadgen
from .procs import Fleet, cpu_seconds, free_port, rss_mb

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
Json = dict[str, Any]
VARIANTS: dict[str, dict[str, str]] = {
    "as-is": {},
    "usage-cap": {"BENCH_USAGE_CAP": "1000"},
    "freeze": {"BENCH_GC_FREEZE": "1"},
    "freeze+cap": {"BENCH_USAGE_CAP": "1000", "BENCH_GC_FREEZE": "1"},
}


def serve(argv: list[str]) -> int:
    """The sidecar CLI with GC timing, patched by the BENCH_* variables."""
    # Per collection: wall time (what a request waiting on it sees) and CPU time (what it costs; the
    # wall time also holds any preemption by other processes on a busy machine).
    pauses: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: []}
    began = [0.0, 0.0]

    def timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[:] = [time.perf_counter(), time.thread_time()]
        else:
            pauses[info["generation"]].append((time.perf_counter() - began[0], time.thread_time() - began[1]))

    gc.callbacks.append(timer)
    from llmroute_sidecar import runtime
    from llmroute_sidecar.__main__ import main as cli

    original = runtime.Sidecar.start
    cap = os.environ.get("BENCH_USAGE_CAP")

    async def start(self: runtime.Sidecar) -> None:
        await original(self)
        if cap:
            self.usage.capacity = int(cap)
        if os.environ.get("BENCH_GC_FREEZE"):
            gc.collect()
            gc.freeze()
        for values in pauses.values():
            values.clear()  # count only what serving costs

    runtime.Sidecar.start = start  # type: ignore[method-assign]

    def dump(*_: object) -> None:
        stats = {
            str(g): {
                "count": len(v),
                "cpu_ms": sum(c for _, c in v) * 1e3,
                "wall_ms": sum(w for w, _ in v) * 1e3,
                "max_wall_ms": max((w for w, _ in v), default=0.0) * 1e3,
            }
            for g, v in pauses.items()
        }
        Path(os.environ["BENCH_GC_OUT"]).write_text(json.dumps(stats))

    signal.signal(signal.SIGUSR1, dump)
    return cli(argv)


async def _experiment(rounds: int, seconds: float, workdir: Path) -> Json:
    from .run import LOAD_CORE, ROUTE, SERVER_CORE

    os.sched_setaffinity(0, {LOAD_CORE})
    fleet = Fleet(workdir)
    try:
        mock_port = free_port()
        mock = fleet.start(
            "mock", ["-m", "bench.overhead.mock", "--port", str(mock_port)], port=mock_port, core=LOAD_CORE
        )
        await fleet.ready(mock)
        config = workdir / "route.yaml"
        config.write_text(ROUTE.format(port=mock_port))
        procs = {}
        for name, env in VARIANTS.items():
            port = free_port()
            argv = [
                "-m", "bench.overhead.gc_probe", "serve", "--config", str(config),
                "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", f"127.0.0.1:{free_port()}",
                "--admin-addr", f"127.0.0.1:{free_port()}", "--watch-seconds", "0", "--log-level", "warning",
            ]  # fmt: skip
            env = {**env, "BENCH_GC_OUT": str(workdir / f"gc-{name}.json")}
            procs[name] = fleet.start(name, argv, port=port, core=SERVER_CORE, env=env)
        for proc in procs.values():
            await fleet.ready(proc)
        cpu_at_start = {name: cpu_seconds(proc.pid) for name, proc in procs.items()}
        rows: dict[str, list[Json]] = {name: [] for name in procs}
        started = time.monotonic()
        for rnd in range(rounds):
            names = list(procs)
            names = names[rnd % len(names) :] + names[: rnd % len(names)]
            for name in names:
                proc = procs[name]
                marks: list[float] = []

                def window(_opening: bool, pid: int = proc.pid, marks: list[float] = marks) -> None:
                    marks.append(cpu_seconds(pid))

                result = await loadgen.run_load(
                    "127.0.0.1", proc.port, concurrency=64, seconds=seconds, warmup=0.3, on_window=window
                )
                stats = analysis.latency_stats(result.latencies_ns)
                n = len(result.latencies_ns)
                row = {
                    "round": rnd,
                    "rps": result.rps,
                    "p50_ms": stats["p50_ms"],
                    "p99_ms": stats["p99_ms"],
                    "cpu_us_per_request": (marks[-1] - marks[0]) / n * 1e6 if n else float("nan"),
                    "rss_mb": rss_mb(proc.pid),
                    "errors": result.errors,
                }
                rows[name].append(row)
                print(
                    f"[{time.monotonic() - started:4.0f}s] round {rnd + 1}/{rounds} {name:<11s} {row['rps']:6.0f} req/s  "
                    f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:7.2f} ms  cpu {row['cpu_us_per_request']:4.0f} µs/req  "
                    f"RSS {row['rss_mb']:5.1f} MB",
                    flush=True,
                )
        busy = {name: cpu_seconds(proc.pid) - cpu_at_start[name] for name, proc in procs.items()}
        out: Json = {}
        for proc in procs.values():
            os.kill(proc.pid, signal.SIGUSR1)
        await asyncio.sleep(0.5)
        for name in procs:
            gcs = json.loads((workdir / f"gc-{name}.json").read_text())
            mine = rows[name]
            out[name] = {
                "rps": statistics.median(r["rps"] for r in mine),
                "p50_ms": statistics.median(r["p50_ms"] for r in mine),
                "p99_ms": statistics.median(r["p99_ms"] for r in mine),
                "p99_last_round_ms": mine[-1]["p99_ms"],
                "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in mine),
                "rss_end_mb": mine[-1]["rss_mb"],
                "gc": gcs,
                "gc_share_of_cpu": sum(g["cpu_ms"] for g in gcs.values()) / 1e3 / busy[name]
                if busy[name]
                else None,
                "rounds": mine,
            }
        return out
    finally:
        fleet.stop()


def _markdown(summary: Json) -> str:
    lines = [
        "| variant | req/s | p50 ms | p99 ms | p99 last round ms | CPU µs/req | RSS at end MB | GC share of CPU | longest gen-2 pause ms (wall) |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for name, r in summary.items():
        lines.append(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p99_last_round_ms']:.1f} | "
            f"{r['cpu_us_per_request']:.0f} | {r['rss_end_mb']:.1f} | {r['gc_share_of_cpu']:.0%} | {r['gc']['2']['max_wall_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead.gc_probe", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    import uvloop

    with tempfile.TemporaryDirectory(prefix="llmroute-gc-") as tmp:
        budget = args.rounds * len(VARIANTS) * (args.seconds + 2) + 60
        summary = uvloop.run(
            asyncio.wait_for(_experiment(args.rounds, args.seconds, Path(tmp)), timeout=budget)
        )
    out = args.out or ROOT / "bench" / "results" / f"gc-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "seconds": args.seconds,
    }
    out.write_text(json.dumps({"meta": meta, "variants": summary}, indent=1) + "\n")
    print(f"\nresults: {out}\n")
    print(_markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
