"""Hard-budget overshoot: many simulated sidecars spending one LLMBudget until nothing is left.

One route with a paid backend and one LLMBudget with only a hard limit on it; ``sidecars`` simulated
sidecars (``budget_clients.py``: the sidecar's own OperatorClient, BudgetGuard and usage reporter,
each with its own TokenRequest token and Pod) lease allowance and spend it at a steady rate. The run
ends once spending has stopped: the budget is ``Exhausted`` or every sidecar is refused because what
is left does not cover a request's estimate, and no request was admitted for ``quiet`` seconds. Then
the sidecars stop as real ones do (leases returned, usage drained) and the spend ``LLMBudget.status``
settles on is compared with the hard limit: the overshoot, in USD and percent, against design.md's
bound of one request's cost per sidecar. Instants:

- ``exhausted_s``: the first time the budget said Exhausted, in its status or in a refusal for
  "its hard limit is reached" (None when the spend stopped just under the limit);
- ``operator_out_s``: the first refusal for lack of allowance (the operator had nothing left to
  grant that sidecar; the others may still hold some);
- ``last_admitted_s``: the last request admitted, by the instant its reservation succeeded.

All from the ``go`` instant, which every sidecar receives at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

from .cluster import Api, bench_budget, bench_route
from .procs import Meter, Operator, Workers, wait_until

__all__ = ["overshoot"]

Json = dict[str, Any]
PRICING = {"inputPerMillion": 2.5, "outputPerMillion": 10.0}  # gpt-4o's list price


async def _settled_spend(api: Api, ns: str, name: str, expect_micro: int, within: float = 30.0) -> Json:
    """The budget's status once its spend stopped moving (or matches what the clients spent)."""
    deadline = time.monotonic() + within
    last: Json = {}
    while time.monotonic() < deadline:
        status = await api.budget_status(ns, name)
        if status.get("spent") and int(Decimal(status["spent"]) * 1_000_000) >= expect_micro:
            return status
        if status == last and status:
            await asyncio.sleep(2.0)
            again = await api.budget_status(ns, name)
            if again == status:
                return status
        last = status
        await asyncio.sleep(0.5)
    return last


def _timeline(
    go: float, admits: list[tuple[float, int, int]], refusals: list[tuple[float, str]]
) -> list[Json]:
    """Admissions, their cost, and refusals per second since ``go``."""
    bins: dict[int, Json] = {}
    for t, _, cost in admits:
        row = bins.setdefault(int(t - go), {"admitted": 0, "usd": 0.0, "refused": 0})
        row["admitted"] += 1
        row["usd"] = round(row["usd"] + cost / 1e6, 6)
    for t, _ in refusals:
        bins.setdefault(int(t - go), {"admitted": 0, "usd": 0.0, "refused": 0})["refused"] += 1
    return [{"s": k, **bins[k]} for k in sorted(bins)]


async def overshoot(
    api: Api,
    operator: Operator,
    meter: Meter,
    ns: str,
    *,
    sidecars: int = 50,
    hard_usd: float = 10.0,
    rate: float = 2.0,
    prompt_tokens: int = 400,
    max_tokens: int = 300,
    quiet: float = 5.0,
    within: float = 240.0,
) -> Json:
    labels = {"app": "spend"}
    route = bench_route(ns, "spend", model="spend", backend_model="gpt-4o", labels=labels, pricing=PRICING)
    await api.create_route(route)
    await api.create_budget(bench_budget(ns, "hard", route="spend", hard_usd=hard_usd))
    admits: list[tuple[float, int, int]] = []  # (instant, estimate, cost)
    refusals: list[tuple[float, str]] = []  # (instant, why)
    stats: dict[str, Json] = {}

    def on_line(kind: str, rest: str) -> None:
        if kind == "admit":
            _pod, t, estimate, cost = rest.split(" ")
            admits.append((float(t), int(estimate), int(cost)))
        elif kind == "refuse":
            _pod, t, why = rest.split(" ")
            refusals.append((float(t), why))
        elif kind == "stats":
            pod, _, blob = rest.partition(" ")
            stats[pod] = json.loads(blob)

    extra = ["--model", "spend", "--rate", str(rate), "--prompt-tokens", str(prompt_tokens)]
    extra += ["--max-tokens", str(max_tokens)]
    workers = Workers(
        operator.target, operator.ca, ns, count=2, module="bench.propagation.budget_clients",
        extra=extra, on_line=on_line,
    )  # fmt: skip
    await workers.start()
    meter.workers = workers.pids
    try:
        pods = await api.gather(
            (lambda i=i: api.pod_with_token(ns, f"spend-{i}", labels)) for i in range(sidecars)
        )
        await workers.add(pods)
        # A fresh operator grants no lease for 25 s (leases of a previous one may still be live).
        await wait_until(lambda: len(workers.up) >= sidecars, within=90, what="sidecars leasing", every=0.1)
        before = meter.sample()
        go = time.monotonic()
        await workers.send("go")
        exhausted_status: float | None = None
        states: list[tuple[float, str, str]] = []
        while time.monotonic() - go < within:
            await asyncio.sleep(0.2)
            status = await api.budget_status(ns, "hard")
            now = time.monotonic()
            states.append((now - go, str(status.get("state")), str(status.get("spent"))))
            if exhausted_status is None and status.get("state") == "Exhausted":
                exhausted_status = now
            last_admit = admits[-1][0] if admits else go
            stopped = refusals and now - max(last_admit, refusals[0][0]) >= quiet
            if stopped or (exhausted_status is not None and now - exhausted_status >= quiet):
                break
        window = before.window(meter.sample())
        rss = meter.rss()
        ended_s = time.monotonic() - go
        await workers.wait_exit(within=60)
    finally:
        await workers.stop()
        meter.workers = list
    errors = dict(workers.errors)
    spent_clients = sum(c for _, _, c in admits)
    status = await _settled_spend(api, ns, "hard", spent_clients)
    hard_micro = round(hard_usd * 1_000_000)
    spent_status = int(Decimal(status.get("spent") or "0") * 1_000_000)
    largest_estimate = max((e for _, e, _ in admits), default=0)
    largest_cost = max((c for _, _, c in admits), default=0)
    exhausted_refusal = next((t for t, why in refusals if why == "exhausted"), None)
    exhausted = min((t for t in (exhausted_status, exhausted_refusal) if t is not None), default=None)
    operator_out = next((t for t, why in refusals if why == "allowance"), None)
    last_admitted = max((t for t, _, _ in admits), default=None)

    def since_go(t: float | None) -> float | None:
        return round(t - go, 3) if t is not None else None

    events: dict[str, int] = {}
    for one in stats.values():
        for event, n in one.get("events", {}).items():
            events[event] = events.get(event, 0) + n
    result: Json = {
        "sidecars": sidecars,
        "hard_limit_usd": hard_usd,
        "rate_per_sidecar": rate,
        "pricing_per_million": PRICING,
        "request": {"prompt_tokens_estimate": prompt_tokens, "max_tokens": max_tokens},
        "estimate_usd": largest_estimate / 1e6,
        "largest_request_usd": largest_cost / 1e6,
        "admitted": len(admits),
        "refused": len(refusals),
        "spent_usd": spent_status / 1e6,
        "spent_usd_by_clients": spent_clients / 1e6,
        "status": {k: status.get(k) for k in ("spent", "remaining", "state")},
        "overshoot_usd": round((spent_status - hard_micro) / 1e6, 6),
        "overshoot_pct": round((spent_status - hard_micro) / hard_micro * 100, 3),
        "bound_usd": round(sidecars * largest_cost / 1e6, 6),
        "exhausted_s": since_go(exhausted),
        "exhausted_in_status_s": since_go(exhausted_status),
        "operator_out_s": since_go(operator_out),
        "last_admitted_s": since_go(last_admitted),
        "last_admitted_after_exhausted_s": (
            round(last_admitted - exhausted, 3) if exhausted is not None and last_admitted else None
        ),
        "last_admitted_after_operator_out_s": (
            round(last_admitted - operator_out, 3) if operator_out is not None and last_admitted else None
        ),
        "admitted_after_operator_out": sum(1 for t, _, _ in admits if operator_out and t > operator_out),
        "ended_s": round(ended_s, 2),
        "sidecar_events": events,
        "sidecars_stopped_cleanly": len(stats),
        "sidecar_errors": dict(list(errors.items())[:5]),
        "sidecar_error_count": len(errors),
        "usage_records_unacked_at_stop": sum(s.get("usage_records_unacked", 0) for s in stats.values()),
        "reconnects": sum(max(0, s.get("connects", 1) - 1) for s in stats.values()),
        "window": window,
        "rss": rss,
        "timeline_per_second": _timeline(go, admits, refusals),
        "last_admissions_s": [round(t - go, 3) for t, _, _ in sorted(admits)[-12:]],
        "status_polls": states[:: max(1, len(states) // 60)],
    }
    print(
        f"  overshoot: {sidecars} sidecars, hard {hard_usd} USD: spent {result['spent_usd']} USD "
        f"({result['overshoot_usd']:+} USD, {result['overshoot_pct']:+}%), bound {result['bound_usd']} USD; "
        f"admitted {len(admits)}, refused {len(refusals)}; exhausted {result['exhausted_s']} s, operator out "
        f"{result['operator_out_s']} s, last admitted {result['last_admitted_s']} s",
        flush=True,
    )
    return result
