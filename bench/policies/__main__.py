"""``python -m bench.policies`` (``make bench-policies``): the request-path policies, priced per request.

One run starts, on loopback only, the fast mock upstream (``bench/overhead/mock.py``) and one
``llmroute-sidecar`` per variant of the same route, each pinned to the server core:

- ``plain``: the route alone (the baseline);
- ``budget``: plus an LLMBudget (standalone: the sidecar's own count);
- ``budget-leases``: operator mode against an in-process config server and budget service (the real
  ``ConfigServer`` and ``BudgetService`` of the integration tier, over TLS), so every request spends
  leased allowance and the wallet is renewed over gRPC while the load runs;
- ``ratelimit``: plus a per-user request and token limit (in-process buckets);
- ``ratelimit-redis``: the same limit in a real Redis (Debian's redis-server), shared buckets;
- ``cache-hit``: plus the exact cache; the bench sends one body, so after the first request every
  answer is a hit (what a hit costs, against a call upstream).

Closed-loop load at concurrency 1 in rounds that rotate the order of the variants, so noise hits them
alike; each round's p50 and p99 per variant, then the median over rounds. ``budget-leases`` also
reports how many requests had to wait for a top-up (``llmroute_budget_events_total{event="urgent"}``):
renewals run in the background, so that count is what shows they stay off the request path. Results
go to ``bench/results/policies-<date>.json`` and a table to stdout (``docs/performance.md`` quotes it).
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
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.overhead import loadgen  # noqa: E402
from bench.overhead.procs import Fleet, Proc, free_port  # noqa: E402

LOAD_CORE, SERVER_CORE = 0, 1

ROUTE = """\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: bench, namespace: bench}}
spec:
  models: [{{name: chat, backends: [mock]}}]
  backends:
  - name: mock
    provider: openai-compatible
    model: bench-model
    endpoint: http://127.0.0.1:{port}/v1
    region: local
    pricing: {{inputPerMillion: 2.0, outputPerMillion: 8.0}}
{extra}
"""
BUDGET = """\
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {name: bench, namespace: bench}
spec:
  scope: {routes: [bench]}
  period: {type: daily}
  limits: {hard: "1000000"}
"""
RATE = "  rateLimits: [{key: user, requestsPerMinute: 100000000, tokensPerMinute: 1000000000}]"
CACHE = "  cache: {exact: {ttl: 10m}}"


def _metric(admin_port: int, name: str, label: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and label in line
    )


class Variants:
    def __init__(self, workdir: Path, fleet: Fleet) -> None:
        self.workdir = workdir
        self.fleet = fleet
        self.procs: dict[str, Proc] = {}
        self.admin: dict[str, int] = {}
        self.plane: Any = None
        self.redis: Any = None

    def _sidecar(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        port, admin = free_port(), free_port()
        argv = [
            "-m", "bench.overhead.sidecar_proc", *args,
            "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", f"127.0.0.1:{free_port()}",
            "--admin-addr", f"127.0.0.1:{admin}", "--watch-seconds", "0", "--log-level", "warning",
            "--audit-log", "off",
        ]  # fmt: skip
        self.procs[name] = self.fleet.start(name, argv, port=port, core=SERVER_CORE, env=env)
        self.admin[name] = admin

    def _config(self, name: str, text: str) -> list[str]:
        path = self.workdir / f"{name}.yaml"
        path.write_text(text)
        return ["--config", str(path)]

    async def start(self, mock_port: int) -> None:
        def route(extra: str = "") -> str:
            return ROUTE.format(port=mock_port, extra=extra)

        self._sidecar("plain", self._config("plain", route()))
        self._sidecar("budget", self._config("budget", route() + BUDGET))
        self._sidecar("ratelimit", self._config("ratelimit", route(RATE)))
        self._sidecar("cache-hit", self._config("cache-hit", route(CACHE)))
        from tests.redis_support import RedisServer, find_redis_server

        binary = find_redis_server()
        if binary is not None:
            self.redis = RedisServer(binary)
            self.redis.start()
            self._sidecar(
                "ratelimit-redis",
                [*self._config("ratelimit-redis", route(RATE)), "--redis-url", self.redis.url],
            )
        else:
            print("redis-server not installed: the ratelimit-redis variant is skipped", flush=True)
        await self._start_leases(route() + BUDGET)
        for proc in self.procs.values():
            await self.fleet.ready(proc)

    async def _start_leases(self, resources: str) -> None:
        from tests.integration.operator_plane import FakeKube, Plane, apply, make_pki

        from llmroute_operator.index import ClusterIndex

        kube = FakeKube()
        token = kube.add_pod("bench", "bench-0", {"app": "bench"})
        self.plane = Plane(
            index=ClusterIndex(), kube=kube, pki=make_pki(self.workdir / "pki"), port=free_port()
        )
        await self.plane.start()
        apply(self.plane.index, resources)
        token_file = self.workdir / "token"
        token_file.write_text(token)
        self._sidecar(
            "budget-leases",
            [
                "--operator",
                f"127.0.0.1:{self.plane.port}",
                "--token-file",
                str(token_file),
                "--ca-file",
                str(self.plane.pki.ca_cert),
            ],
            env={"POD_NAME": "bench-0", "POD_NAMESPACE": "bench"},
        )

    async def stop(self) -> None:
        if self.plane is not None:
            await self.plane.stop()
        if self.redis is not None:
            self.redis.close()


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # µs


async def run(rounds: int, seconds: float) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmroute-bench-policies-") as tmp:
        workdir = Path(tmp)
        fleet = Fleet(workdir)
        mock_port = free_port()
        mock = fleet.start(
            "mock", ["-m", "bench.overhead.mock", "--port", str(mock_port)], port=mock_port, core=LOAD_CORE
        )
        variants = Variants(workdir, fleet)
        try:
            await fleet.ready(mock)
            await variants.start(mock_port)
            names = list(variants.procs)
            for name in names:  # every variant answers (and the lease variant got its config) first
                for _ in range(100):
                    result = await loadgen.run_load(
                        "127.0.0.1", variants.procs[name].port, concurrency=1, seconds=0.1, warmup=0.0
                    )
                    if not result.errors and b"chat.completion" in result.sample:
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise RuntimeError(f"{name} does not answer: {result.statuses} {result.sample!r}")
            urgent_before = _metric(
                variants.admin["budget-leases"], "llmroute_budget_events_total", 'event="urgent"'
            )
            samples: dict[str, list[tuple[float, float, int]]] = {n: [] for n in names}
            for index in range(rounds):
                order = names[index % len(names) :] + names[: index % len(names)]
                for name in order:
                    result = await loadgen.run_load(
                        "127.0.0.1", variants.procs[name].port, concurrency=1, seconds=seconds, warmup=0.3
                    )
                    if result.errors:
                        raise RuntimeError(
                            f"{name}: {result.errors} errors: {result.statuses} {result.sample!r}"
                        )
                    lat = result.latencies_ns
                    samples[name].append((_percentile(lat, 0.5), _percentile(lat, 0.99), len(lat)))
                print(f"[{time.monotonic() - started:5.0f}s] round {index + 1}/{rounds} done", flush=True)
            urgent = (
                _metric(variants.admin["budget-leases"], "llmroute_budget_events_total", 'event="urgent"')
                - urgent_before
            )
            topups = _metric(variants.admin["budget-leases"], "llmroute_budget_events_total", 'event="topup"')
        finally:
            await variants.stop()
            for proc in fleet.procs:
                proc.popen.terminate()
            for proc in fleet.procs:
                try:
                    proc.popen.wait(timeout=10)
                except Exception:
                    proc.popen.kill()
    summary: dict[str, Any] = {}
    base_p50 = statistics.median(s[0] for s in samples["plain"])
    base_p99 = statistics.median(s[1] for s in samples["plain"])
    for name, rows in samples.items():
        p50 = statistics.median(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        summary[name] = {
            "p50_us": round(p50, 1),
            "p99_us": round(p99, 1),
            "added_p50_us": round(p50 - base_p50, 1),
            "added_p99_us": round(p99 - base_p99, 1),
            "requests": sum(r[2] for r in rows),
        }
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "rounds": rounds,
        "seconds": seconds,
        "concurrency": 1,
        "summary": summary,
        "budget_leases": {"urgent_topups_during_load": urgent, "topups_total": topups},
        "samples": samples,
    }
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        "| variant | p50 µs | p99 µs | added p50 µs | added p99 µs | requests |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in result["summary"].items():
        lines.append(
            f"| {name} | {row['p50_us']} | {row['p99_us']} | {row['added_p50_us']:+} | {row['added_p99_us']:+} | {row['requests']} |"
        )
    leases = result["budget_leases"]
    lines.append("")
    lines.append(
        f"budget-leases: {leases['urgent_topups_during_load']:.0f} requests waited for a top-up during the load; "
        f"{leases['topups_total']:.0f} top-ups in all (background renewals over gRPC)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policies", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M")
    out = args.out or ROOT / "bench" / "results" / f"policies-{stamp}.json"
    result = asyncio.run(asyncio.wait_for(run(args.rounds, args.seconds), timeout=600))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
