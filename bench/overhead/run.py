"""``python -m bench.overhead``: what the sidecar costs on the hot path, against the Python floor.

One run starts, on loopback only:
  - the fast mock upstream (``mock.py``) on core 0, beside this process (the load generator);
  - on core 1: the bare aiohttp+uvloop passthrough (``passthrough.py``) and three sidecars, one per
    upstream client (``LLMROUTE_UPSTREAM_CLIENT``): httptools (the default), aiohttp and httpx, from
    the same standalone LLMRoute (one ``openai-compatible`` backend: the mock).
Then, in rounds that rotate the order of the targets (so noise hits all of them alike), it runs
closed-loop non-streaming load at each concurrency against direct / passthrough / both sidecars;
then 50 concurrent streams per target (time to first token); then one wave of many concurrent
streams (RSS and TTFT under that); optionally py-spy profiles of each sidecar under load. Every
phase is bounded in time, and the whole run has a hard deadline. Raw results go to
``bench/results/overhead-<date>.json``, plots to ``docs/img/overhead-*.png``; ``--quick`` writes
under ``bench/results/quick/`` instead so it never overwrites the documented run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from . import analysis, loadgen, memory, profile
from .procs import Fleet, Proc, core_busy_seconds, cpu_seconds, free_port, rss_mb, self_cpu_seconds
from .sidecar_proc import grpc_front_present

__all__ = ["Plan", "execute", "main", "pool_curves"]

ROOT = Path(__file__).resolve().parents[2]
LOAD_CORE, SERVER_CORE = 0, 1
Json = dict[str, Any]

ROUTE = """\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: bench, namespace: bench}}
spec:
  models:
  - name: chat
    backends: [mock]
  backends:
  - name: mock
    provider: openai-compatible
    model: bench-model
    endpoint: http://127.0.0.1:{port}/v1
    region: local
    pricing: {{inputPerMillion: 2.0, outputPerMillion: 8.0}}
"""


@dataclass(frozen=True)
class Plan:
    rounds: int = 6
    seconds: float = 3.0  # counted window of one non-streaming segment
    warmup: float = 0.5
    concurrency: tuple[int, ...] = (1, 64)
    stream_rounds: int = 3
    stream_seconds: float = 2.5
    stream_concurrency: int = 50
    stream_tokens: int = 20
    stream_interval_ms: float = 25.0  # 40 tokens/s per stream, a fast model
    many_streams: int = 1000
    many_tokens: int = 20
    many_interval_ms: float = 100.0
    many_limit: float = 12.0  # streams of the wave still open after this are counted incomplete
    profile_seconds: float = 6.0
    memory_breakdown: bool = True
    deadline: float = 295.0  # hard stop for the whole run


QUICK = Plan(
    rounds=2,
    seconds=1.0,
    warmup=0.3,
    stream_rounds=1,
    stream_seconds=1.0,
    many_streams=200,
    many_tokens=10,
    many_limit=5.0,
    profile_seconds=0.0,
    memory_breakdown=False,
    deadline=58.0,
)


class Progress:
    def __init__(self, total_steps: int) -> None:
        self.started = time.monotonic()
        self.total = total_steps
        self.done = 0

    def step(self, message: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        print(f"[{elapsed:5.0f}s  {self.done:3d}/{self.total}  eta {eta:4.0f}s] {message}", flush=True)

    def note(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f}s] {message}", flush=True)


class Bench:
    """Holds the running processes and the samples taken from them."""

    def __init__(self, plan: Plan, fleet: Fleet, progress: Progress) -> None:
        self.plan = plan
        self.fleet = fleet
        self.progress = progress
        self.mock: Proc | None = None
        self.targets: dict[str, Proc | None] = {}
        self.segments: list[Json] = []
        self.rss: dict[str, Json] = {}
        # What bench.peers changes: the bearer token every target gets (LiteLLM checks a master
        # key), the stream interval written into the message as well (LiteLLM forwards neither
        # metadata nor user), inter-chunk gaps, the phase name and how long a segment may drain.
        self.token = "bench"
        self.content_hint = False
        self.drain = 30.0
        self.warm_all = False

    # -- processes ------------------------------------------------------------------------------

    async def start(self, workdir: Path) -> None:
        mock_port = free_port()
        self.mock = self.fleet.start(
            "mock", ["-m", "bench.overhead.mock", "--port", str(mock_port)], port=mock_port, core=LOAD_CORE
        )
        await self.fleet.ready(self.mock)
        self.targets["direct"] = None
        port = free_port()
        self.targets["passthrough"] = self.fleet.start(
            "passthrough",
            [
                "-m",
                "bench.overhead.passthrough",
                "--port",
                str(port),
                "--upstream",
                f"http://127.0.0.1:{mock_port}",
            ],
            port=port,
            core=SERVER_CORE,
        )
        config = workdir / "route.yaml"
        config.write_text(ROUTE.format(port=mock_port))
        for client in ("httptools", "aiohttp", "httpx"):
            port = free_port()
            argv = [
                "-m", "bench.overhead.sidecar_proc", "--config", str(config),
                "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", f"127.0.0.1:{free_port()}",
                "--admin-addr", f"127.0.0.1:{free_port()}", "--watch-seconds", "0", "--log-level", "warning",
            ]  # fmt: skip
            self.targets[f"sidecar-{client}"] = self.fleet.start(
                f"sidecar-{client}",
                argv,
                port=port,
                core=SERVER_CORE,
                env={"LLMROUTE_UPSTREAM_CLIENT": client},
            )
        for proc in self.targets.values():
            if proc is not None:
                await self.fleet.ready(proc)
        await asyncio.sleep(1.0)  # let start-up garbage settle before the idle RSS reading
        for name, proc in self.targets.items():
            if proc is not None:
                self.rss[name] = {"idle_start": rss_mb(proc.pid), "peak": 0.0, "idle_end": 0.0}
        # Prove every target answers correctly before measuring anything.
        for name in self.targets:
            result = await loadgen.run_load(
                "127.0.0.1", self._port(name), concurrency=1, seconds=0.2, warmup=0.0, token=self.token
            )
            if result.errors or b"chat.completion" not in result.sample:
                raise RuntimeError(
                    f"{name} does not answer a chat completion: {result.statuses} {result.sample!r}"
                )

    def _port(self, target: str) -> int:
        proc = self.targets[target]
        assert self.mock is not None
        return self.mock.port if proc is None else proc.port

    def server_pid(self, target: str) -> int:
        proc = self.targets[target]
        assert self.mock is not None
        return self.mock.pid if proc is None else proc.pid

    # -- sampling -------------------------------------------------------------------------------

    async def _sample_rss(self, target: str, peak: list[float], stop: asyncio.Event) -> None:
        proc = self.targets[target]
        if proc is None:
            return
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(proc.pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    def _cpu(self, target: str) -> tuple[float, float, float, float, float]:
        """CPU seconds so far: server, mock, load generator, and all users of each core."""
        assert self.mock is not None
        proc = self.targets[target]
        server = cpu_seconds(proc.pid) if proc is not None else 0.0
        return (
            server,
            cpu_seconds(self.mock.pid),
            self_cpu_seconds(),
            core_busy_seconds(LOAD_CORE),
            core_busy_seconds(SERVER_CORE),
        )

    # -- phases ---------------------------------------------------------------------------------

    async def nonstream(self, rnd: int, concurrency: int, target: str, *, phase: str = "nonstream") -> None:
        marks: list[tuple[float, ...]] = []

        def on_window(_opening: bool) -> None:
            marks.append((time.monotonic(), *self._cpu(target)))

        peak = [0.0]
        stop = asyncio.Event()
        sampler = asyncio.create_task(self._sample_rss(target, peak, stop))
        try:
            result = await loadgen.run_load(
                "127.0.0.1", self._port(target), concurrency=concurrency,
                seconds=self.plan.seconds, warmup=self.plan.warmup, on_window=on_window,
                token=self.token, drain=self.drain, warm_all=self.warm_all,
            )  # fmt: skip
        finally:
            stop.set()
            await sampler
        (t0, s0, m0, l0, c0, d0), (t1, s1, m1, l1, c1, d1) = marks[0], marks[-1]
        wall = t1 - t0
        n = len(result.latencies_ns)
        own = (s1 - s0) if self.targets[target] is not None else (m1 - m0)
        row: Json = {
            "phase": phase,
            "round": rnd,
            "concurrency": concurrency,
            "target": target,
            **analysis.latency_stats(result.latencies_ns),
            "errors": result.errors,
            "statuses": {str(k): v for k, v in result.statuses.items()},
            "rps": result.rps,
            "served_rps": result.served_rps,
            "warmup_seconds": result.warmup_seconds,
            "cpu_us_per_request": own / n * 1e6 if n else float("nan"),
            "server_core_busy": (s1 - s0) / wall if self.targets[target] is not None else float("nan"),
            "load_core_busy": ((m1 - m0) + (l1 - l0)) / wall,
            # Other processes on each core during the window: the noise this run had to live with.
            "load_core_foreign": max(0.0, (c1 - c0) - (m1 - m0) - (l1 - l0)) / wall,
            "server_core_foreign": max(0.0, (d1 - d0) - (s1 - s0)) / wall,
            "loadgen_us_per_request": (l1 - l0) / n * 1e6 if n else float("nan"),
            "rss_peak_mb": peak[0] or None,
            "_latencies": result.latencies_ns,
        }
        self.segments.append(row)
        if target in self.rss:
            self.rss[target]["peak"] = max(self.rss[target]["peak"], peak[0])
        self.progress.step(
            f"{phase} round {rnd + 1} c={concurrency:<3d} {target:<16s} {result.rps:7.0f} req/s  "
            f"p50 {row['p50_ms']:6.3f} ms  p99 {row['p99_ms']:6.3f} ms  "
            f"cpu {row['cpu_us_per_request']:5.0f} µs/req  cores: load {row['load_core_busy']:.0%}"
            f"+{row['load_core_foreign']:.0%} foreign, server {row['server_core_busy']:.0%}"
            f"+{row['server_core_foreign']:.0%} foreign"
            + (f"  ERRORS {result.errors} {result.statuses}" if result.errors else "")
        )

    async def stream(self, rnd: int, target: str) -> None:
        plan = self.plan
        before = self._cpu(target)
        result = await loadgen.run_streams(
            f"http://127.0.0.1:{self._port(target)}/v1/chat/completions",
            concurrency=plan.stream_concurrency, seconds=plan.stream_seconds,
            tokens=plan.stream_tokens, interval_ms=plan.stream_interval_ms, limit=plan.stream_seconds + 10,
            ramp=plan.stream_tokens * plan.stream_interval_ms / 1000,  # desynchronise the lanes
            token=self.token, content_hint=self.content_hint,
        )  # fmt: skip
        after = self._cpu(target)
        own = (after[0] - before[0]) if self.targets[target] is not None else (after[1] - before[1])
        ttft = analysis.latency_stats(result.ttft_ns)
        total = analysis.latency_stats(result.total_ns)
        row: Json = {
            "phase": "stream",
            "round": rnd,
            "concurrency": plan.stream_concurrency,
            "target": target,
            "n": ttft["n"],
            "errors": result.errors,
            "incomplete": result.incomplete,
            "ttft_p50_ms": ttft["p50_ms"],
            "ttft_p99_ms": ttft["p99_ms"],
            "ttft_max_ms": ttft["max_ms"],
            "total_p50_ms": total["p50_ms"],
            "cpu_us_per_stream": own / ttft["n"] * 1e6 if ttft["n"] else float("nan"),
            "_ttft": result.ttft_ns,
        }
        self.segments.append(row)
        self.progress.step(
            f"stream round {rnd + 1} {target:<16s} {ttft['n']:5d} streams  TTFT p50 {ttft['p50_ms']:6.3f} ms  "
            f"p99 {ttft['p99_ms']:6.3f} ms"
            + (f"  ERRORS {result.errors}+{result.incomplete}" if result.errors or result.incomplete else "")
        )

    async def many(self, target: str) -> Json:
        plan = self.plan
        proc = self.targets[target]
        rss_before = rss_mb(proc.pid) if proc is not None else None
        peak = [0.0]
        stop = asyncio.Event()
        sampler = asyncio.create_task(self._sample_rss(target, peak, stop))
        t0, before = time.monotonic(), self._cpu(target)
        try:
            result = await loadgen.run_streams(
                f"http://127.0.0.1:{self._port(target)}/v1/chat/completions",
                concurrency=plan.many_streams, seconds=0.0, tokens=plan.many_tokens,
                interval_ms=plan.many_interval_ms, ramp=1.0, once=True, limit=plan.many_limit,
                token=self.token, content_hint=self.content_hint, gaps=True,
            )  # fmt: skip
        finally:
            stop.set()
            await sampler
        wall, after = time.monotonic() - t0, self._cpu(target)
        ttft = analysis.latency_stats(result.ttft_ns)
        gap = analysis.latency_stats(result.gaps_ns)
        row: Json = {
            "target": target,
            "concurrency": plan.many_streams,
            "interval_ms": plan.many_interval_ms,
            "gap_p50_ms": gap["p50_ms"],
            "gap_p99_ms": gap["p99_ms"],
            "gap_max_ms": gap["max_ms"],
            "peak_open": result.peak_open,
            "completed": ttft["n"],
            "errors": result.errors,
            "incomplete": result.incomplete,
            "ttft_p50_ms": ttft["p50_ms"],
            "ttft_p99_ms": ttft["p99_ms"],
            "ttft_max_ms": ttft["max_ms"],
            "seconds": wall,
            "rss_before_mb": rss_before,
            "rss_peak_mb": peak[0] or None,
            "server_core_busy": (after[0] - before[0]) / wall if self.targets[target] is not None else None,
            "server_core_foreign": max(0.0, (after[4] - before[4]) - (after[0] - before[0])) / wall,
            "load_core_busy": ((after[1] - before[1]) + (after[2] - before[2])) / wall,
            "load_core_foreign": max(
                0.0, (after[3] - before[3]) - (after[1] - before[1]) - (after[2] - before[2])
            )
            / wall,
            # SSE events per stream: the content tokens, the finish chunk and [DONE].
            "cpu_us_per_event": (after[0] - before[0]) / (ttft["n"] * (plan.many_tokens + 2)) * 1e6
            if ttft["n"] and self.targets[target] is not None
            else None,
        }
        if target in self.rss:
            self.rss[target]["peak"] = max(self.rss[target]["peak"], peak[0])
        self.progress.step(
            f"{plan.many_streams} streams {target:<16s} completed {ttft['n']}  TTFT p50 {ttft['p50_ms']:.1f} ms  "
            f"p99 {ttft['p99_ms']:.1f} ms  RSS peak {peak[0]:.1f} MB"
            + (
                f"  INCOMPLETE {result.incomplete} ERRORS {result.errors}"
                if result.incomplete or result.errors
                else ""
            )
        )
        return row


def _rotation(targets: list[str], rnd: int) -> list[str]:
    shift = rnd % len(targets)
    return targets[shift:] + targets[:shift]


async def _run(plan: Plan, workdir: Path, progress: Progress, fleet: Fleet) -> Json:
    bench = Bench(plan, fleet, progress)
    progress.note("starting mock (core 0), passthrough and three sidecars (core 1)")
    await bench.start(workdir)
    targets = list(analysis.TARGETS)
    for rnd in range(plan.rounds):
        for concurrency in plan.concurrency if rnd % 2 == 0 else tuple(reversed(plan.concurrency)):
            for target in _rotation(targets, rnd):
                await bench.nonstream(rnd, concurrency, target)
    # Profiles after the non-streaming rounds: the state of a sidecar that has served ~10^5 requests.
    profiles: Json = {}
    if plan.profile_seconds:
        for target in ("passthrough", *analysis.SIDECARS):
            profiles[target] = await profile.record(
                bench.server_pid(target), bench._port(target), seconds=plan.profile_seconds, core=LOAD_CORE
            )
            progress.step(
                f"profiled {target}: {profiles[target].get('summary_line', profiles[target].get('error'))}"
            )
    for rnd in range(plan.stream_rounds):
        for target in _rotation(targets, rnd):
            await bench.stream(rnd, target)
    many: Json = {}
    if plan.many_streams:
        for target in targets:
            many[target] = await bench.many(target)
            await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)
    for name, proc in bench.targets.items():
        if proc is not None:
            bench.rss[name]["idle_end"] = rss_mb(proc.pid)
    imports = memory.import_rss() if plan.memory_breakdown else {}
    if imports:
        progress.note("measured the RSS of the sidecar's imports, step by step")
    return {
        "segments": bench.segments,
        "many_streams": many,
        "rss_mb": bench.rss,
        "import_rss": imports,
        "profiles": profiles,
    }


def _versions() -> Json:
    out: Json = {"python": platform.python_version()}
    for name in ("aiohttp", "httptools", "httpx", "httpcore", "uvloop", "orjson", "llmroute"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git() -> Json:
    """The commit measured, and whether the sidecar's files differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "sidecar_dirty": bool(git("status", "--porcelain", "sidecar")),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _steps(plan: Plan) -> int:
    targets = len(analysis.TARGETS)
    steps = plan.rounds * len(plan.concurrency) * targets + plan.stream_rounds * targets
    return (
        steps
        + (targets if plan.many_streams else 0)
        + (len(analysis.SIDECARS) + 1 if plan.profile_seconds else 0)
    )


def pool_curves(segments: list[Json]) -> Json:
    """Quantile curves of all rounds pooled, per phase/concurrency/target (for the CDF plot); the raw
    samples are dropped from the segments (they would make the JSON huge)."""
    curves: Json = {}
    for s in segments:
        key = f"{s['phase']}/{s['concurrency']}/{s['target']}"
        curves.setdefault(key, []).extend(s.pop("_latencies", None) or s.pop("_ttft", None) or [])
    return {key: analysis.curve(values) for key, values in curves.items()}


def execute(body: Callable[[Path, Fleet], Awaitable[Json]], *, deadline: float) -> Json:
    """Run ``body(workdir, fleet)`` under uvloop with a hard deadline; every process it started stops.

    On a failure, the tail of each server's log is printed before the work directory goes.
    """
    with tempfile.TemporaryDirectory(prefix="llmroute-bench-") as tmp:
        fleet = Fleet(Path(tmp))
        try:
            import uvloop

            return uvloop.run(asyncio.wait_for(body(Path(tmp), fleet), timeout=deadline))
        except TimeoutError:
            raise SystemExit(f"bench: the run passed its {deadline:.0f}s deadline and was stopped") from None
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):
                with contextlib.suppress(OSError):
                    print(
                        f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-1500:]}", file=sys.stderr
                    )
            raise
        finally:
            fleet.stop()


def run(plan: Plan, *, out: Path, img_dir: Path, quick: bool, nice: int = 0) -> Json:
    if (os.cpu_count() or 1) < 2:
        raise SystemExit(
            "this bench needs two cores (load + mock on one, the server under test on the other)"
        )
    os.sched_setaffinity(0, {LOAD_CORE})
    if nice:
        os.nice(nice)  # the servers started below inherit it
    started = dt.datetime.now(dt.UTC)
    progress = Progress(_steps(plan))
    load_before = os.getloadavg()
    raw = execute(lambda workdir, fleet: _run(plan, workdir, progress, fleet), deadline=plan.deadline)
    curves = pool_curves(raw["segments"])
    result: Json = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - progress.started, 1),
            "quick": quick,
            "plan": asdict(plan),
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "pinning": {"load generator + mock": LOAD_CORE, "passthrough + sidecars": SERVER_CORE},
            "nice": nice,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "versions": _versions(),
            "git": _git(),
            "sidecar_grpc_front": grpc_front_present(),
            "curve_quantiles": analysis.CURVE_Q,
        },
        **raw,
        "curves": curves,
    }
    result["summary"] = analysis.summarize(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    print(f"\nraw results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    _render(result, img_dir)
    return result


def _render(result: Json, img_dir: Path) -> None:
    from . import plots

    for path in plots.render(result, img_dir):
        print(f"plot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print()
    print(analysis.markdown(result["summary"]))
    high = max(result["summary"]["nonstream"], key=int, default=None)
    for target, prof in result.get("profiles", {}).items():
        # py-spy slows what it samples: charge the shares to the CPU per request measured unprofiled.
        cpu = result["summary"]["nonstream"][high].get(target, {}).get("cpu_us_per_request") if high else None
        print(profile.markdown(target, prof, cpu_us_per_request=cpu))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run (< 60 s) written under bench/results/quick/"
    )
    parser.add_argument("--rounds", type=int, help="rounds of non-streaming segments")
    parser.add_argument("--seconds", type=float, help="counted seconds of one non-streaming segment")
    parser.add_argument(
        "--many-streams", type=int, help="concurrent streams in the one-wave check (0 skips it)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness added to every bench process; e.g. -5 (root) favours them over other work on a shared machine",
    )
    parser.add_argument("--out", type=Path, help="results JSON path")
    parser.add_argument("--img-dir", type=Path, help="where the PNG plots go")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only re-render plots and tables of a saved run"
    )
    args = parser.parse_args(argv)
    if args.render:
        result = json.loads(args.render.read_text())
        result["summary"] = analysis.summarize(result)
        _render(result, args.img_dir or ROOT / "docs" / "img")
        return 0
    plan = QUICK if args.quick else Plan()
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.seconds:
        plan = replace(plan, seconds=args.seconds)
    if args.many_streams is not None:
        plan = replace(plan, many_streams=args.many_streams)
    if args.no_profile:
        plan = replace(plan, profile_seconds=0.0)
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M")  # one file per run: runs never overwrite each other
    if args.quick:
        out = args.out or ROOT / "bench" / "results" / "quick" / f"overhead-{stamp}.json"
        img_dir = args.img_dir or ROOT / "bench" / "results" / "quick"
    else:
        out = args.out or ROOT / "bench" / "results" / f"overhead-{stamp}.json"
        img_dir = args.img_dir or ROOT / "docs" / "img"
    os.chdir(ROOT)  # the servers run as ``python -m bench.overhead.*`` from the repository root
    sys.path.insert(0, str(ROOT))
    run(plan, out=out, img_dir=img_dir, quick=args.quick, nice=args.nice)
    return 0
