"""``python -m bench.peers`` (``make bench``): the sidecar, the Python floor and LiteLLM proxy in one run.

Reuses ``bench.overhead`` whole: its mock, load generator, pinned process fleet, segment sampling
(CPU and RSS from /proc, foreign load per core) and its per-round statistics. On loopback only:

  - core 0: this process (the load generator), the mock, and a minimal config server (idle after
    its one push);
  - core 1: the bare aiohttp+uvloop passthrough (the floor), the sidecar in standalone mode, the
    sidecar in operator-fed mode (idle RSS only), and LiteLLM proxy (one worker, its own venv).

Phases, each in rounds that rotate the order of the targets (direct = the mock, passthrough,
sidecar, litellm) so that noise hits all alike: concurrency 1 (added p50/p99); a closed-loop
concurrency sweep 1-256 (req/s, added p99, error rate; the direct rows are the mock's own ceiling,
measured with the same client); 50 concurrent streams (added TTFT); one wave of 1,000 concurrent
streams per target (TTFT, inter-chunk gaps, RSS idle/peak/after). Every request carries the same
body and the same bearer token (LiteLLM's master key; the others ignore it). Results go to
``docs/bench/peers-<stamp>.json`` and ``docs/bench/latest.json``; then plots and
``docs/performance.md`` are rendered from that JSON (``--render JSON`` does only that).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.overhead import analysis as oa
from bench.overhead import loadgen
from bench.overhead.procs import Fleet, free_port, rss_detail_mb, rss_mb
from bench.overhead.run import (
    LOAD_CORE,
    ROOT,
    ROUTE,
    SERVER_CORE,
    Bench,
    Plan,
    Progress,
    _cpu_model,
    _git,
    _rotation,
    _versions,
    execute,
    pool_curves,
)

from . import litellm_env

__all__ = ["PeersPlan", "main"]

Json = dict[str, Any]
TARGETS = ("direct", "passthrough", "sidecar", "litellm")
OUT_DIR = ROOT / "docs" / "bench"


@dataclass(frozen=True)
class PeersPlan:
    c1_rounds: int = 6
    c1_seconds: float = 3.0
    sweep: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    sweep_rounds: int = 3
    sweep_seconds: float = 2.0
    warmup: float = 0.5
    stream_rounds: int = 2
    many_rounds: int = 1
    many_limit: float = 20.0
    deadline: float = 840.0  # the whole measured run; the LiteLLM install comes before it

    def base(self) -> Plan:
        """The ``bench.overhead`` plan whose segment code this run drives."""
        return Plan(
            rounds=self.c1_rounds,
            seconds=self.c1_seconds,
            warmup=self.warmup,
            concurrency=(1,),
            stream_rounds=self.stream_rounds,
            many_limit=self.many_limit,
            profile_seconds=0.0,
            memory_breakdown=False,
            deadline=self.deadline,
        )


QUICK = PeersPlan(
    c1_rounds=2,
    c1_seconds=1.0,
    sweep=(1, 16, 256),
    sweep_rounds=1,
    sweep_seconds=1.0,
    warmup=0.3,
    stream_rounds=1,
    many_limit=10.0,
    deadline=240.0,
)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


class PeersBench(Bench):
    """``bench.overhead``'s Bench with this run's fleet: the floor, two sidecars and LiteLLM."""

    def __init__(self, plan: Plan, fleet: Fleet, progress: Progress, litellm_python: Path) -> None:
        super().__init__(plan, fleet, progress)
        self.litellm_python = litellm_python
        self.token = "sk-" + secrets.token_hex(32)  # LiteLLM's master key; the others ignore it
        self.content_hint = True
        self.drain = 60.0  # LiteLLM at concurrency 256 answers in seconds, not milliseconds
        self.warm_all = True  # so its warm-up lasts until each connection has had an answer
        self.startup_s: Json = {}

    async def start(self, workdir: Path) -> None:
        fleet = self.fleet
        mock_port = free_port()
        self.mock = fleet.start(
            "mock", ["-m", "bench.overhead.mock", "--port", str(mock_port)], port=mock_port, core=LOAD_CORE
        )
        await fleet.ready(self.mock)
        self.targets["direct"] = None
        route = workdir / "route.yaml"
        route.write_text(ROUTE.format(port=mock_port))
        litellm_config = workdir / "litellm.yaml"
        litellm_config.write_text(litellm_env.config_yaml(mock_port))
        began = time.monotonic()
        port = free_port()
        litellm = fleet.start(
            "litellm",
            litellm_env.argv(self.litellm_python, litellm_config, port)[1:],
            port=port,
            core=SERVER_CORE,
            env={**litellm_env.environment(), "LITELLM_MASTER_KEY": self.token},
            executable=litellm_env.argv(self.litellm_python, litellm_config, port)[0],
        )
        port = free_port()
        self.targets["passthrough"] = fleet.start(
            "passthrough",
            ["-m", "bench.overhead.passthrough", "--port", str(port), "--upstream", f"http://127.0.0.1:{mock_port}"],
            port=port,
            core=SERVER_CORE,
        )  # fmt: skip

        def common() -> list[str]:  # a gRPC port of its own for each sidecar
            return ["--grpc-addr", f"127.0.0.1:{free_port()}", "--log-level", "warning", "--audit-log", "off"]

        port = free_port()
        self.targets["sidecar"] = fleet.start(
            "sidecar",
            ["-m", "bench.overhead.sidecar_proc", "--config", str(route), "--http-addr", f"127.0.0.1:{port}",
             "--admin-addr", f"127.0.0.1:{free_port()}", "--watch-seconds", "0", *common()],
            port=port,
            core=SERVER_CORE,
        )  # fmt: skip
        # Operator-fed mode: the real --operator path (TLS, token, StreamConfig, usage stream) against
        # a minimal config server that pushes the same route compiled.
        config_port, ca, token = free_port(), workdir / "ca.pem", workdir / "token"
        token.write_text("bench-token\n")
        config_server = fleet.start(
            "config-server",
            ["-m", "bench.peers.config_server", "--port", str(config_port), "--route", str(route), "--ca-out", str(ca)],
            port=config_port,
            core=LOAD_CORE,
        )  # fmt: skip
        await fleet.ready(config_server)
        port, admin = free_port(), free_port()
        operator_fed = fleet.start(
            "sidecar-operator",
            ["-m", "llmroute_sidecar", "--operator", f"127.0.0.1:{config_port}", "--token-file", str(token),
             "--ca-file", str(ca), "--http-addr", f"127.0.0.1:{port}", "--admin-addr", f"127.0.0.1:{admin}", *common()],
            port=port,
            core=SERVER_CORE,
        )  # fmt: skip
        for proc in (self.targets["passthrough"], self.targets["sidecar"], operator_fed):
            assert proc is not None
            await fleet.ready(proc)
        deadline = time.monotonic() + 20
        while not _http_ok(f"http://127.0.0.1:{admin}/readyz"):
            if time.monotonic() > deadline:
                raise RuntimeError("the operator-fed sidecar got no config from the bench config server")
            await asyncio.sleep(0.1)
        self.startup_s["sidecar-operator"] = round(time.monotonic() - began, 1)
        self.progress.note("floor and both sidecars up; waiting for LiteLLM proxy (slow to start)")
        await fleet.ready(litellm, within=180.0)
        self.startup_s["litellm"] = round(time.monotonic() - began, 1)
        self.targets["litellm"] = litellm
        self.progress.note(f"LiteLLM proxy listening after {self.startup_s['litellm']:.0f}s")
        await asyncio.sleep(1.0)  # let start-up garbage settle before the idle RSS reading
        for name, proc in (*self.targets.items(), ("sidecar-operator", operator_fed)):
            if proc is not None:
                self.rss[name] = {
                    "idle_start": rss_mb(proc.pid),
                    "idle_start_detail": rss_detail_mb(proc.pid),
                    "peak": 0.0,
                    "idle_end": 0.0,
                }
        # Prove every target (both sidecar modes too) answers correctly before measuring anything.
        checks = {**{n: self._port(n) for n in self.targets}, "sidecar-operator": operator_fed.port}
        for name, target_port in checks.items():
            result = await loadgen.run_load(
                "127.0.0.1", target_port, concurrency=1, seconds=0.2, warmup=0.0, token=self.token
            )
            if result.errors or b"chat.completion" not in result.sample:
                raise RuntimeError(
                    f"{name} does not answer a chat completion: {result.statuses} {result.sample!r}"
                )
        await asyncio.sleep(0.5)
        self.rss["sidecar-operator"]["after_one_request"] = rss_mb(operator_fed.pid)
        self.operator_fed = operator_fed


def _steps(plan: PeersPlan) -> int:
    n = len(TARGETS)
    return n * (plan.c1_rounds + plan.sweep_rounds * len(plan.sweep) + plan.stream_rounds + plan.many_rounds)


async def _run(plan: PeersPlan, workdir: Path, progress: Progress, fleet: Fleet, python: Path) -> Json:
    base = plan.base()
    bench = PeersBench(base, fleet, progress, python)
    progress.note("starting mock + config server (core 0); floor, sidecars and LiteLLM proxy (core 1)")
    await bench.start(workdir)
    targets = list(TARGETS)
    for rnd in range(plan.c1_rounds):
        for target in _rotation(targets, rnd):
            await bench.nonstream(rnd, 1, target, phase="c1")
    bench.plan = replace(base, seconds=plan.sweep_seconds)
    for rnd in range(plan.sweep_rounds):
        for concurrency in plan.sweep if rnd % 2 == 0 else tuple(reversed(plan.sweep)):
            for target in _rotation(targets, rnd + concurrency):
                await bench.nonstream(rnd, concurrency, target, phase="sweep")
    for rnd in range(plan.stream_rounds):
        for target in _rotation(targets, rnd):
            await bench.stream(rnd, target)
    waves: list[Json] = []
    for rnd in range(plan.many_rounds):
        for target in _rotation(targets, rnd):
            row = await bench.many(target)
            await asyncio.sleep(2.0)  # then the RSS the wave left behind
            proc = bench.targets[target]
            row["round"] = rnd
            row["rss_after_mb"] = rss_mb(proc.pid) if proc is not None else None
            waves.append(row)
    await asyncio.sleep(1.0)
    for name, proc in (*bench.targets.items(), ("sidecar-operator", bench.operator_fed)):
        if proc is not None:
            bench.rss[name]["idle_end"] = rss_mb(proc.pid)
            bench.rss[name]["idle_end_detail"] = rss_detail_mb(proc.pid)
    return {
        "segments": bench.segments,
        "waves": waves,
        "rss_mb": bench.rss,
        "startup_s": bench.startup_s,
    }


def run(plan: PeersPlan, *, out_dir: Path, quick: bool) -> Path:
    if (os.cpu_count() or 1) < 2:
        raise SystemExit(
            "this bench needs two cores (load + mock on one, the server under test on the other)"
        )
    python = litellm_env.ensure()  # cached after the first run
    os.sched_setaffinity(0, {LOAD_CORE})
    started = dt.datetime.now(dt.UTC)
    progress = Progress(_steps(plan))
    load_before = os.getloadavg()
    raw = execute(lambda workdir, fleet: _run(plan, workdir, progress, fleet, python), deadline=plan.deadline)
    # The CDF plots need concurrency 1 and the streams; the sweep's 36 curves would triple the JSON.
    curves = {k: v for k, v in pool_curves(raw["segments"]).items() if not k.startswith("sweep/")}
    versions = _versions()
    versions["litellm"] = litellm_env.LITELLM_VERSION
    result: Json = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - progress.started, 1),
            "quick": quick,
            "plan": asdict(plan),
            "stream_plan": {k: v for k, v in asdict(plan.base()).items() if k.startswith(("stream", "many"))},
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "pinning": {
                "load generator + mock + config server": LOAD_CORE,
                "passthrough + sidecars + litellm": SERVER_CORE,
            },
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "versions": versions,
            "git": _git(),
            "litellm": {
                "config": litellm_env.config_yaml(0).replace(":0/", ":<mock>/"),
                "flags": litellm_env.argv(Path("python"), Path("litellm.yaml"), 0)[1:],
                "environment": litellm_env.environment(),
            },
            "sidecar_flags": "--audit-log off --log-level warning (standalone: --watch-seconds 0)",
            "curve_quantiles": oa.CURVE_Q,
        },
        **raw,
        "curves": curves,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y-%m-%dT%H%M")
    out = out_dir / f"peers-{stamp}.json"
    out.write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    if not quick:
        shutil.copyfile(out, out_dir / "latest.json")
    print(f"\nraw results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run, written under bench/results/quick/"
    )
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only render plots and docs/performance.md"
    )
    parser.add_argument("--setup-only", action="store_true", help="only create the cached LiteLLM venv")
    parser.add_argument("--no-page", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the servers run as ``python -m bench.*`` from the repository root
    sys.path.insert(0, str(ROOT))
    from . import render

    if args.setup_only:
        litellm_env.ensure()
        return 0
    if args.render:
        render.render(args.render, write_page=not args.no_page)
        return 0
    quick = bool(args.quick)
    out_dir = ROOT / "bench" / "results" / "quick" if quick else OUT_DIR
    out = run(QUICK if quick else PeersPlan(), out_dir=out_dir, quick=quick)
    render.render(out, write_page=not (quick or args.no_page), img_dir=out_dir)
    return 0
