"""Operator scale: apply -> ACK at growing numbers of subscribed clients, and 1,000 routes to Programmed.

:func:`propagation` grows one set of client workers (``clients.py``) through the sizes asked for
(pods and tokens minted only for the clients that are new at each size). At each size it measures

- subscribing: the new clients connect ``ramp`` at a time (a failed connect retried as a sidecar
  retries), each a TLS handshake, a TokenReview and a Pod read; what the operator, the API server
  and etcd spent on them;
- idle: the operator's CPU (in cores) and RSS over a quiet window with every client connected;
- apply -> ACK: per round, ``kubectl apply`` of a changed route, then the time until each client
  ACKed the new version, from the instant before ``kubectl`` started (and from its return); the
  operator's CPU seconds and peak RSS from that instant until the last ACK, and the foreign load
  over the same window. One warm-up round, not counted, then ``rounds`` measured rounds.

A size that cannot be reached (clients refused, file descriptors, the run's time budget) is recorded
with what stopped it, and no larger size is tried. :func:`routes_to_programmed` creates many routes at
once for a few subscribed clients and waits until every one is ``Programmed`` with all clients synced.
After the last size the clients leave, and an idle window shows whether the operator freed what they
held.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

from .cluster import Api, bench_route
from .procs import Meter, Operator, Workers, tcp_established, wait_until

__all__ = ["CLIENTS_PER_WORKER", "RAMP", "percentile", "propagation", "routes_to_programmed", "summary"]

LABELS = {"app": "bench"}
#: At most this many clients per worker process (the coordinator and the operator are separate).
CLIENTS_PER_WORKER = 1250
#: New clients connect this many at a time (each step waits for the previous one): a burst of
#: thousands of simultaneous new streams is a different test (``--ramp 0``; see docs/operator-scale.md).
RAMP = 500
Json = dict[str, Any]


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


def _median(rows: list[Json], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


async def apply_route(kubectl: Any, body: Json) -> float:
    """``kubectl apply`` of one object; returns the instant (monotonic) just before kubectl started."""
    import json

    started = time.monotonic()
    await asyncio.to_thread(kubectl.run, "apply", "-f", "-", input=json.dumps(body))
    return started


async def _idle(meter: Meter, seconds: float) -> Json:
    before = meter.sample()
    await asyncio.sleep(seconds)
    return {**before.window(meter.sample()), **meter.rss()}


async def _round(kubectl: Any, workers: Workers, meter: Meter, route: Json, names: list[str]) -> Json:
    """One route change: its ACK latencies, the operator's CPU and peak RSS until the last ACK."""
    before = {p: workers.last_version(p) for p in names}
    workers.waiting = dict(before)
    stop = asyncio.Event()
    peak = asyncio.create_task(meter.peak_rss(stop))
    start = meter.sample()
    t0 = await apply_route(kubectl, route)
    kubectl_s = time.monotonic() - t0
    try:
        await wait_until(
            lambda: not workers.waiting, within=120, what=f"{len(names)} clients ACK", every=0.01
        )
    finally:
        end = meter.sample()
        stop.set()
    latencies = [next(t for v, t in workers.acks[p] if v != before[p] and t >= t0) - t0 for p in names]
    return {
        "kubectl_apply_ms": round(kubectl_s * 1000, 1),
        "latencies": latencies,
        **summary(latencies),
        **start.window(end),
        "operator_rss_peak_mb": await peak,
    }


async def propagation(
    kubectl: Any,
    api: Api,
    operator: Operator,
    meter: Meter,
    ns: str,
    sizes: list[int],
    rounds: int,
    *,
    deadline: float,
    idle_seconds: float = 5.0,
    ramp: int = RAMP,
) -> tuple[Json, Json]:
    """apply -> ACK and the operator's cost at each size reached, and how the run went (``meta``).

    Stops growing at the first size it cannot reach."""
    route = bench_route(ns, "bench", model="chat", backend_model="m-0", labels=LABELS)
    await apply_route(kubectl, route)
    count = max(2, -(-max(sizes) // CLIENTS_PER_WORKER))
    workers = Workers(operator.target, operator.ca, ns, count=count)
    await workers.start()
    meter.workers = workers.pids
    results: Json = {}  # by size, only sizes reached (what bench/peers reads)
    meta: Json = {"worker_processes": count, "ramp": ramp or None, "not_reached": {}}
    made = 0
    try:
        for size in sizes:
            left = deadline - time.monotonic()
            if left < 60:
                meta["not_reached"][str(size)] = {"limit": f"run time budget ({left:.0f}s left)"}
                break
            try:
                results[str(size)] = await _size(
                    kubectl, api, workers, meter, operator, route, ns, size, made, rounds, left,
                    idle_seconds, ramp,
                )  # fmt: skip
            except (TimeoutError, RuntimeError) as exc:
                up = len(workers.up)
                meta["not_reached"][str(size)] = {"limit": str(exc)[:2000], "subscribed": up}
                print(f"  {size:>5} clients: not reached ({str(exc)[:300]}); {up} subscribed", flush=True)
                break
            made = size
    finally:
        await workers.stop()
        meter.workers = list
    # What the operator costs once every client has gone: sessions and their state should be freed.
    await asyncio.sleep(3.0)
    meta["after_clients_left"] = await _idle(meter, idle_seconds)
    return results, meta


async def _subscribe(
    workers: Workers, pods: list[tuple[str, str]], ramp: int, within: float
) -> tuple[int, int]:
    """Connect ``pods`` ``ramp`` at a time; a failed connect is retried as a sidecar does (full-jitter
    backoff, base 0.5 s), up to three times. Returns (failures on the first try, connects retried)."""
    first_failures = retried = 0
    deadline = time.monotonic() + within
    for start in range(0, len(pods), ramp):
        batch = pods[start : start + ramp]
        attempt = 0
        while True:
            await workers.add(batch)

            def answered(batch: list[tuple[str, str]] = batch) -> bool:
                return all(p in workers.up or p in workers.errors for p, _ in batch)

            await wait_until(
                answered, within=max(1.0, deadline - time.monotonic()), what="clients subscribed", every=0.05
            )
            batch = [(p, t) for p, t in batch if p in workers.errors]
            if not batch or attempt == 3:
                break
            first_failures += len(batch) if attempt == 0 else 0
            retried += len(batch)
            for pod, _ in batch:
                workers.up.discard(pod)
                del workers.errors[pod]
            await asyncio.sleep(random.uniform(0, 0.5 * 2**attempt))
            attempt += 1
    return first_failures, retried


async def _size(
    kubectl: Any,
    api: Api,
    workers: Workers,
    meter: Meter,
    operator: Operator,
    route: Json,
    ns: str,
    size: int,
    made: int,
    rounds: int,
    budget_s: float,
    idle_seconds: float,
    ramp: int,
) -> Json:
    started = time.monotonic()
    pods = await api.gather(
        (lambda i=i: api.pod_with_token(ns, f"sc-{i}", LABELS)) for i in range(made, size)
    )
    minted_s = time.monotonic() - started
    before = meter.sample()
    started = time.monotonic()
    first_failures, retried = await _subscribe(workers, pods, ramp or len(pods) or 1, budget_s - 30)
    names = [f"sc-{i}" for i in range(size)]

    def subscribed() -> bool:
        return all(workers.acks.get(p) for p in names) or bool(workers.errors)

    await wait_until(subscribed, within=60, what=f"{size} clients' first config", every=0.05)
    if workers.errors:
        raise RuntimeError(f"{len(workers.errors)} clients failed: {list(workers.errors.items())[:3]}")
    subscribe_s = time.monotonic() - started
    subscribe = before.window(meter.sample())
    await asyncio.sleep(1.0)  # let the connect storm's status writes settle
    idle = await _idle(meter, idle_seconds)
    connections = tcp_established(operator.config_port)
    measured: list[Json] = []
    for r in range(-1, rounds):  # round -1 warms up (kubectl's caches, the new streams); not counted
        await asyncio.sleep(1.0)
        route["spec"]["backends"][0]["model"] = f"m-{size}-{r + 1}"
        this = await _round(kubectl, workers, meter, route, names)
        if r >= 0:
            measured.append(this)
    latencies = [x for row in measured for x in row["latencies"]]
    after_apply = [x - row["kubectl_apply_ms"] / 1000 for row in measured for x in row["latencies"]]
    for row in measured:
        del row["latencies"]
    out: Json = {
        "pods_and_tokens_s": round(minted_s, 2),
        "subscribe_s": round(subscribe_s, 2),
        "subscribe": subscribe,
        "subscribe_ramp": ramp or None,
        "connect_failures_first_try": first_failures,
        "connects_retried": retried,
        "connections_to_config_server": connections,
        "idle": idle,
        "apply_to_ack": summary(latencies),
        "apply_returned_to_ack": summary(after_apply),
        "push": {
            "operator_cpu_s_median": _median(measured, "operator_cpu_s"),
            "operator_cores_median": _median(measured, "operator_cores"),
            "operator_rss_peak_mb": max(r["operator_rss_peak_mb"] for r in measured),
            "plane_cpu_s_median": _median(measured, "plane_cpu_s"),
            "workers_cpu_s_median": _median(measured, "workers_cpu_s"),
            "foreign_cores_median": _median(measured, "foreign_cores"),
        },
        "rounds": measured,
    }
    print(
        f"  {size:>5} clients: apply->ACK {out['apply_to_ack']}  subscribe {subscribe_s:.1f}s  "
        f"operator idle {idle['operator_cores']:.2f} cores {idle['operator_mb']} MB, push "
        f"{out['push']['operator_cpu_s_median']} CPU s (peak {out['push']['operator_rss_peak_mb']} MB), "
        f"foreign {out['push']['foreign_cores_median']} cores",
        flush=True,
    )
    return out


async def routes_to_programmed(
    api: Api, operator: Operator, meter: Meter, ns: str, count: int, clients: int
) -> Json:
    workers = Workers(operator.target, operator.ca, ns, count=1)
    await workers.start()
    meter.workers = workers.pids
    try:
        pods = await api.gather(
            (lambda i=i: api.pod_with_token(ns, f"rt-{i}", LABELS)) for i in range(clients)
        )
        await workers.add(pods)
        await wait_until(
            lambda: len(workers.up) >= clients, within=120, what="route clients subscribed", every=0.05
        )
        stop = asyncio.Event()
        peak = asyncio.create_task(meter.peak_rss(stop))
        before = meter.sample()
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
        window = before.window(meter.sample())
        stop.set()
        sizes = {len(workers.acks.get(p, [])) for p, _ in pods}
        result = {
            "routes": count,
            "subscribed_clients": clients,
            "create_s": round(created_s, 2),
            "to_programmed_s": round(programmed_s, 2) if programmed_s is not None else None,
            "last_poll": last,
            "pushes_per_client": sorted(sizes),
            "window": window,
            "operator_rss_peak_mb": await peak,
        }
        print(
            f"  {count} routes: created in {created_s:.1f}s, all Programmed after {result['to_programmed_s']}s "
            f"(operator {window['operator_cpu_s']} CPU s, foreign {window['foreign_cores']} cores)",
            flush=True,
        )
        return result
    finally:
        await workers.stop()
        meter.workers = list
