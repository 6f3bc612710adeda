"""``python -m bench.propagation`` (``make bench-propagation``): how fast applied config reaches sidecars.

Everything real and on loopback: a local kube-apiserver + etcd (the e2e plane), ``llmroute-operator
--dev`` as a child process, and sidecar clients in two worker processes (``clients.py``), each client
with its own TLS channel and a TokenRequest-minted token bound to its own Pod object, verified by a
real TokenReview when it subscribes. Two measurements:

1. **apply -> ACK** for 1, 100 and 1,000 subscribed clients: per round, ``kubectl apply`` of a changed
   route, then the time until each client ACKed the new version (clock: ``time.monotonic`` of this
   process before ``kubectl`` starts, against the workers' ACK instants), and the same from the moment
   ``kubectl`` returned. Five rounds per size, after one warm-up round that is not counted.
2. **1,000 routes to Programmed**: 1,000 new LLMRoutes (distinct models, all selecting the same 10
   subscribed clients) created through the API 24 at a time; the time until every one has
   ``Programmed=True`` for its generation with all 10 clients synced (status polled twice a second).

Bounded: each wait has a deadline, and the workers, the operator and the plane always stop. Raw figures
go to ``bench/results/propagation-<date>.json`` (``--quick``: 1 and 100 clients, 200 routes, under
``bench/results/quick/``). The machine is shared by everything above, as a small cluster would be.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmroute_operator.devcluster import target

from .cluster import Api, bench_route

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"app": "bench"}
Json = dict[str, Any]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> Json:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.50) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1) if values else None,
        "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else None,
    }


@dataclass
class Workers:
    """Client worker processes and what they report."""

    target: str
    ca: Path
    namespace: str
    count: int = 2
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    up: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)
    acks: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    _next: int = 0

    async def start(self) -> None:
        for _ in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.propagation.clients",
                "--target", self.target, "--ca", str(self.ca), "--namespace", self.namespace,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            )  # fmt: skip
            self.procs.append(proc)
            self._readers.append(asyncio.create_task(self._read(proc)))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            kind, _, rest = line.decode().strip().partition(" ")
            if kind == "up":
                self.up.add(rest)
            elif kind == "err":
                pod, _, message = rest.partition(" ")
                self.errors[pod] = message
            elif kind == "ack":
                pod, version, instant = rest.split(" ")
                self.acks.setdefault(pod, []).append((version, float(instant)))

    async def add(self, pods: list[tuple[str, str]]) -> None:
        for pod, token in pods:
            proc = self.procs[self._next % len(self.procs)]
            self._next += 1
            assert proc.stdin is not None
            proc.stdin.write(f"{pod} {token}\n".encode())
        for proc in self.procs:
            assert proc.stdin is not None
            await proc.stdin.drain()

    def last_version(self, pod: str) -> str:
        acks = self.acks.get(pod)
        return acks[-1][0] if acks else ""

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
        for reader in self._readers:
            reader.cancel()


async def wait_until(check: Any, *, within: float, what: str, every: float = 0.005) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(every)


class Operator:
    def __init__(self, kubeconfig: Path, workdir: Path, namespaces: list[str]) -> None:
        self.kubeconfig, self.workdir = kubeconfig, workdir
        self.ca = workdir / "ca.pem"
        self.config_port, self.metrics_port, self.webhook_port = free_port(), free_port(), free_port()
        self.namespaces = namespaces
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> float:
        args = ["--dev", "--ca-out", str(self.ca), "--config-addr", f"127.0.0.1:{self.config_port}"]
        args += [
            "--metrics-addr",
            f"127.0.0.1:{self.metrics_port}",
            "--webhook-addr",
            f"127.0.0.1:{self.webhook_port}",
        ]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        log = (self.workdir / "operator.log").open("wb")
        started = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmroute_operator", *args,
            stdout=log, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )  # fmt: skip
        await wait_until(self._ready, within=120, what="operator /readyz", every=0.1)
        return time.monotonic() - started

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.returncode is None, "operator exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=30)
            except TimeoutError:
                self.proc.kill()


async def apply_route(kubectl: Any, body: Json) -> float:
    """``kubectl apply`` of one object; returns the instant (monotonic) just before kubectl started."""
    started = time.monotonic()
    await asyncio.to_thread(kubectl.run, "apply", "-f", "-", input=json.dumps(body))
    return started


async def propagation(
    cluster: target.Cluster, api: Api, operator: Operator, ns: str, sizes: list[int], rounds: int
) -> Json:
    kubectl = cluster.kubectl
    route = bench_route(ns, "bench", model="chat", backend_model="m-0", labels=LABELS)
    await apply_route(kubectl, route)
    workers = Workers(f"127.0.0.1:{operator.config_port}", operator.ca, ns)
    await workers.start()
    results: Json = {}
    made = 0
    try:
        for size in sizes:
            started = time.monotonic()
            pods = await api.gather(
                (lambda i=i: api.pod_with_token(ns, f"sc-{i}", LABELS)) for i in range(made, size)
            )
            made = size
            minted_s = time.monotonic() - started
            started = time.monotonic()
            await workers.add(pods)
            names = [f"sc-{i}" for i in range(size)]

            def subscribed(names: list[str] = names) -> bool:
                if len(workers.up) + len(workers.errors) < len(names):
                    return False
                return all(workers.acks.get(p) for p in names if p not in workers.errors)

            await wait_until(subscribed, within=300, what=f"{size} clients subscribed", every=0.05)
            if workers.errors:
                raise RuntimeError(f"clients failed: {list(workers.errors.items())[:3]}")
            subscribed_s = time.monotonic() - started
            latencies: list[float] = []
            after_apply: list[float] = []  # from kubectl's return (the API server accepted the change)
            per_round: list[Json] = []
            for r in range(-1, rounds):  # round -1 warms up (kubectl's caches, the new streams); not counted
                await asyncio.sleep(1.0)
                before = {f"sc-{i}": workers.last_version(f"sc-{i}") for i in range(size)}
                route["spec"]["backends"][0]["model"] = f"m-{size}-{r + 1}"
                t0 = await apply_route(kubectl, route)
                kubectl_s = time.monotonic() - t0

                def acked(before: dict[str, str] = before) -> bool:
                    return all(workers.last_version(p) != v for p, v in before.items())

                await wait_until(acked, within=120, what=f"{size} clients ACK round {r + 1}")
                this = [
                    next(t for v, t in workers.acks[p] if v != before[p] and t >= t0) - t0 for p in before
                ]
                if r < 0:
                    continue
                latencies += this
                after_apply += [x - kubectl_s for x in this]
                per_round.append({"kubectl_apply_ms": round(kubectl_s * 1000, 1), **summary(this)})
            results[str(size)] = {
                "pods_and_tokens_s": round(minted_s, 2),
                "subscribe_s": round(subscribed_s, 2),
                "apply_to_ack": summary(latencies),
                "apply_returned_to_ack": summary(after_apply),
                "rounds": per_round,
            }
            print(
                f"  {size:>5} clients: apply->ACK {summary(latencies)}  (subscribe {subscribed_s:.1f}s)",
                flush=True,
            )
    finally:
        await workers.stop()
    return results


async def routes_to_programmed(api: Api, operator: Operator, ns: str, count: int, clients: int) -> Json:
    workers = Workers(f"127.0.0.1:{operator.config_port}", operator.ca, ns, count=1)
    await workers.start()
    try:
        pods = await api.gather(
            (lambda i=i: api.pod_with_token(ns, f"rt-{i}", LABELS)) for i in range(clients)
        )
        await workers.add(pods)
        await wait_until(
            lambda: len(workers.up) >= clients, within=120, what="route clients subscribed", every=0.05
        )
        started = time.monotonic()
        await api.gather(
            (
                lambda i=i: api.create_route(
                    bench_route(ns, f"r-{i:04d}", model=f"model-{i}", backend_model="m", labels=LABELS)
                )
            )
            for i in range(count)
        )
        created_s = time.monotonic() - started
        programmed_s = None
        last: Json = {}
        deadline = started + 600
        while time.monotonic() < deadline:
            items = await api.routes(ns)
            reasons: dict[str, int] = {}
            done = 0
            for item in items:
                status = item.get("status") or {}
                cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Programmed"), {})
                fresh = status.get("observedGeneration") == item["metadata"].get("generation")
                synced = (status.get("sidecars") or {}).get("synced") == clients  # not just "NoSidecars"
                ok = cond.get("status") == "True" and fresh and synced
                done += ok
                reasons[str(cond.get("reason"))] = reasons.get(str(cond.get("reason")), 0) + 1
            last = {"programmed": done, "routes": len(items), "reasons": reasons}
            if done >= count:
                programmed_s = time.monotonic() - started
                break
            await asyncio.sleep(0.5)
        sizes = {len(workers.acks.get(p, [])) for p, _ in pods}
        result = {
            "routes": count,
            "subscribed_clients": clients,
            "create_s": round(created_s, 2),
            "to_programmed_s": round(programmed_s, 2) if programmed_s is not None else None,
            "last_poll": last,
            "pushes_per_client": sorted(sizes),
        }
        print(
            f"  {count} routes: created in {created_s:.1f}s, all Programmed after {programmed_s}s", flush=True
        )
        return result
    finally:
        await workers.stop()


async def run(args: argparse.Namespace) -> Json:
    sizes = [1, 100] if args.quick else [1, 100, 1000]
    routes = 200 if args.quick else 1000
    out: Json = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rounds": args.rounds,
    }
    with target.open_cluster() as cluster:
        kubectl = cluster.kubectl
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/llmroutes.llmroute.io")
        ns_push, ns_routes = cluster.create_namespace("bench-push"), cluster.create_namespace("bench-routes")
        for ns in (ns_push, ns_routes):
            kubectl.run("create", "serviceaccount", "app", "-n", ns)
        workdir = Path(args.workdir or ROOT / "_artifacts" / "bench-propagation")
        workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything is timed
        operator = Operator(cluster.kubeconfig, workdir, [ns_push, ns_routes])
        api = await Api.connect(cluster.kubeconfig)
        try:
            out["operator_ready_s"] = round(await operator.start(), 2)
            print(f"operator ready in {out['operator_ready_s']}s; apply -> ACK:", flush=True)
            out["apply_to_ack"] = await propagation(cluster, api, operator, ns_push, sizes, args.rounds)
            out["routes_to_programmed"] = await routes_to_programmed(
                api, operator, ns_routes, routes, clients=10
            )
        finally:
            await api.close()
            await operator.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.propagation", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 and 100 clients, 200 routes; results under quick/"
    )
    parser.add_argument("--rounds", type=int, default=5, help="route updates per client count")
    parser.add_argument(
        "--workdir", help="where the operator log goes (default _artifacts/bench-propagation)"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    folder = ROOT / "bench" / "results" / ("quick" if args.quick else "")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"propagation-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path.relative_to(ROOT)}")
    return 0
