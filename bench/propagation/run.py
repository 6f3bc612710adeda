"""``python -m bench.propagation`` (``make bench-propagation``): how fast applied config reaches sidecars,
what one operator replica pays for its sidecars, and how well a hard budget holds across many.

Everything real and on loopback: a local kube-apiserver + etcd (the e2e plane), ``llmroute-operator
--dev`` as a child process (alone in its process), and sidecar clients in worker processes, each
client with its own TLS channel and a TokenRequest-minted token bound to its own Pod object,
verified by a real TokenReview when it subscribes. Three measurements, in this order:

1. **Operator scale** (``scale.py``), for each ``--clients`` size (default 1, 100, 1,000, 5,000):
   apply -> ACK p50/p99 over five rounds (plus one warm-up), the operator's RSS and CPU while idle
   with every client connected and during each push, and the subscribe storm's cost;
2. **1,000 routes to Programmed** (``--routes``) for 10 subscribed clients;
3. **Hard-budget overshoot** (``overshoot.py``, ``--overshoot`` sidecars, default 50): simulated
   sidecars running the sidecar's own budget code spend one LLMBudget (``--hard-usd``) at a steady
   rate until nothing is left; the final spend against the limit and when the last request got in.

CPU and memory come from ``/proc``; every window also records the foreign load (busy time of the
machine's cores not spent by the benchmark's own processes), because other work shares the machine.
Bounded: the run has a time budget (``--budget-seconds``, default 900); a client count that cannot be
reached in it, or at all, is recorded with the reason, and the run goes on with the other parts. The
workers, the operator and the plane always stop. Raw figures go to
``bench/results/propagation-<date>T<HHMM>.json`` (``--quick``: 1 and 100 clients, 200 routes, 10
budget sidecars on 2 USD, under ``bench/results/quick/``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from llmroute_operator.devcluster import target

from .cluster import Api
from .overshoot import overshoot
from .procs import Meter, Operator, raise_nofile
from .scale import RAMP, propagation, routes_to_programmed

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
Json = dict[str, Any]
#: Seconds the run keeps for routes to Programmed and the overshoot after the client sizes.
RESERVE_S = 240.0
#: The chart's operator container limits (helm/values.yaml ``resources.limits``).
CHART_LIMITS = {"cpu_cores": 1.0, "memory_mb": 512.0}


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def analyse(sizes: Json) -> Json:
    """Per-client costs from the largest reached size against the smallest, and where they run out."""
    reached = sorted((int(n), v) for n, v in sizes.items())
    if len(reached) < 2:
        return {}
    (n0, small), (n1, large) = reached[0], reached[-1]
    clients = n1 - n0
    push_s = (large["push"]["operator_cpu_s_median"] - small["push"]["operator_cpu_s_median"]) / clients
    rss_mb = (large["idle"]["operator_mb"] - small["idle"]["operator_mb"]) / clients
    subscribe_s = large["subscribe"]["operator_cpu_s"] / max(1, n1 - int(reached[-2][0]))
    p99 = {str(n): v["apply_to_ack"]["p99_ms"] for n, v in reached}
    out: Json = {
        "from_sizes": [n0, n1],
        "operator_cpu_ms_per_client_per_push": round(push_s * 1000, 4),
        "operator_rss_kb_per_client": round(rss_mb * 1024, 1),
        "operator_cpu_ms_per_subscribe": round(subscribe_s * 1000, 3),
        "apply_to_ack_p99_ms": p99,
    }
    if push_s > 0:
        # The push is one event loop's work: past this many clients, one push alone keeps that
        # loop (one core) busy for a whole second, i.e. apply -> ACK p99 > 1 s whatever else happens.
        out["clients_at_1s_operator_cpu_per_push"] = round(1.0 / push_s)
    if rss_mb > 0:
        base = small["idle"]["operator_mb"]
        out["clients_at_chart_memory_limit"] = round((CHART_LIMITS["memory_mb"] - base) / rss_mb + n0)
    return out


async def run(args: argparse.Namespace) -> Json:
    started = time.monotonic()
    budget_end = started + args.budget_seconds
    sizes = [1, 100] if args.quick else [int(x) for x in args.clients.split(",") if x.strip()]
    routes = 200 if args.quick else args.routes
    spenders = 10 if args.quick else args.overshoot
    hard_usd = 2.0 if args.quick else args.hard_usd  # 10 sidecars spend 2 USD in about 35 s
    out: Json = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": os.getloadavg(),
        },
        "git_commit": _git_commit(),
        "rounds": args.rounds,
        "ramp": args.ramp,
        "nofile": raise_nofile(),
        "chart_limits": CHART_LIMITS,
    }
    with target.open_cluster() as cluster:
        kubectl = cluster.kubectl
        kubectl.apply_crds(ROOT / "crds")
        namespaces = [cluster.create_namespace(h) for h in ("bench-push", "bench-routes", "bench-budget")]
        for ns in namespaces:
            kubectl.run("create", "serviceaccount", "app", "-n", ns)
        ns_push, ns_routes, ns_budget = namespaces
        workdir = Path(args.workdir or ROOT / "_artifacts" / "bench-propagation")
        workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything is timed
        operator = Operator(cluster.kubeconfig, workdir, namespaces)
        api = await Api.connect(cluster.kubeconfig)
        try:
            out["operator_ready_s"] = round(await operator.start(), 2)
            plane = cluster.plane.pids() if cluster.plane is not None else {}
            meter = Meter(operator.pid, plane)
            out["operator_rss_at_start_mb"] = meter.rss()["operator_mb"]
            print(f"operator ready in {out['operator_ready_s']}s; apply -> ACK:", flush=True)
            out["apply_to_ack"], out["scale"] = await propagation(
                kubectl, api, operator, meter, ns_push, sizes, args.rounds,
                deadline=budget_end - (RESERVE_S if routes or spenders else 0), ramp=args.ramp,
            )  # fmt: skip
            out["analysis"] = analyse(out["apply_to_ack"])
            print(f"  per client: {out['analysis']}", flush=True)
            if routes:
                out["routes_to_programmed"] = await routes_to_programmed(
                    api, operator, meter, ns_routes, routes, clients=10
                )
            if spenders:
                out["overshoot"] = await overshoot(
                    api, operator, meter, ns_budget, sidecars=spenders, hard_usd=hard_usd,
                    rate=args.budget_rate, within=max(60.0, budget_end - time.monotonic() - 60),
                )  # fmt: skip
        finally:
            await api.close()
            await operator.stop()
    out["machine"]["loadavg_after"] = os.getloadavg()
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.propagation", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 and 100 clients, 200 routes, 10 budget sidecars; under quick/"
    )
    parser.add_argument(
        "--clients", default="1,100,1000,5000", help="subscribed client counts, comma-separated, ascending"
    )
    parser.add_argument(
        "--ramp", type=int, default=RAMP, help="new clients connect this many at a time (0: all at once)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="route updates per client count")
    parser.add_argument("--routes", type=int, default=1000, help="routes to Programmed (0: skip)")
    parser.add_argument(
        "--overshoot", type=int, default=50, help="simulated sidecars on one hard budget (0: skip)"
    )
    parser.add_argument("--hard-usd", type=float, default=10.0, help="the budget's hard limit")
    parser.add_argument("--budget-rate", type=float, default=2.0, help="requests per second per sidecar")
    parser.add_argument("--budget-seconds", type=float, default=900.0, help="time budget of the whole run")
    parser.add_argument(
        "--workdir", help="where the operator log goes (default _artifacts/bench-propagation)"
    )
    args = parser.parse_args(argv)
    # A hard stop past the time budget: the plane and every child still stop (context managers).
    result = asyncio.run(asyncio.wait_for(run(args), args.budget_seconds + 180))
    folder = ROOT / "bench" / "results" / ("quick" if args.quick else "")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M")
    path = folder / f"propagation-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path.relative_to(ROOT)}")
    return 0
