"""Simulated sidecars spending one hard budget: the sidecar's own budget code, without its HTTP front.

``python -m bench.propagation.budget_clients --target 127.0.0.1:PORT --ca CA --namespace NS --model M``
reads ``<pod-name> <token>`` lines on stdin and runs, for each, what an operator-mode sidecar runs
for budgets, from ``llmroute_sidecar`` itself (nothing re-implemented): an ``OperatorClient`` (config
stream with ACKs, the sequence-numbered ``ReportUsage`` stream every 0.5 s, reconnects), a
``ConfigStore`` whose swaps ``BudgetGuard.sync``, and a ``BudgetGuard`` over an ``OperatorSource``
(Lease/Renew/Return through the operator's Allowances service, top-ups in the background).

What is simulated is the rest of the request path. After ``go`` on stdin each sidecar receives
requests at ``--rate`` per second (Poisson arrivals, each request concurrent with the others): the
estimate is what ``routing/tokens.py`` would give a prompt of ``--prompt-tokens`` with
``max_tokens=--max-tokens``, priced by ``estimate_micro`` on the route's backend; the guard reserves
it (``Charge.reserve``, exactly the service's spend hook); the "provider" answers after a uniform
``--latency`` with a prompt of 0.8-1.2x the estimate (the estimate is a characters/4 rule, right to
tens of percent) and 0.25-1.0x the output budget; the reservation is settled with ``cost_micro``
and a ``UsageRecord`` like the service's joins the buffer the reporter drains. A refusal is a usage
record with cost 0 (outcome ``budget_exceeded``), as the service records it.

Reported on stdout (``time.monotonic``, comparable across processes): ``up <pod>`` once it holds a
lease; ``admit <pod> <t> <estimate> <cost>`` for each answered request (t: the reservation's instant);
``refuse <pod> <t> exhausted|allowance|unreachable`` (the budget's state said Exhausted, what is
left does not cover the estimate, or the operator cannot be asked); ``stats <pod> <json>`` at the end. On stdin EOF every sidecar stops as a real
one does (requests in flight finish, leases are returned, usage is drained to the operator).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmroute_sidecar.accounting import Usage, cost_micro, estimate_micro
from llmroute_sidecar.budget import BudgetGuard, BudgetRefusal
from llmroute_sidecar.budget.lease_client import OperatorSource
from llmroute_sidecar.config.store import ConfigStore
from llmroute_sidecar.operator_client import ClientSettings, NodeInfo, OperatorClient
from llmroute_sidecar.usage import UsageBuffer, UsageRecord

__all__ = ["SimSidecar"]


def emit(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


class SimSidecar:
    def __init__(self, args: argparse.Namespace, pod: str, token_file: Path, rng: random.Random) -> None:
        self.args, self.pod, self.rng = args, pod, rng
        self.node = NodeInfo(id=f"{pod}-{uuid.uuid4().hex[:12]}", pod_name=pod, namespace=args.namespace)
        self.store = ConfigStore()
        self.usage = UsageBuffer(capacity=100_000)
        self.source = OperatorSource(sidecar_id=self.node.id)
        self.events: dict[str, int] = {}
        self.guard = BudgetGuard(source=self.source, listener=self._event)
        self.store.on_swap(lambda snapshot: self.guard.sync(snapshot.config))
        self.client = OperatorClient(
            settings=ClientSettings(target=args.target, token_file=token_file, ca_file=Path(args.ca)),
            node=self.node,
            store=self.store,
            usage=self.usage,
            allowances=self.source,
        )
        self.inflight: set[asyncio.Task[None]] = set()
        self.admitted = self.refused = self.spent = 0
        self.largest_cost = 0

    def _event(self, event: str, budget: str) -> None:
        self.events[event] = self.events.get(event, 0) + 1

    async def start(self) -> None:
        await self.client.start()
        await self.guard.start()
        while not (self.store.current and any(w.lease_id for w in self.guard.wallets.values())):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the guard has no event for "leased"; polled, only at start
        emit("up", self.pod)

    async def serve(self, stop: asyncio.Event) -> None:
        """Poisson arrivals at ``--rate`` until ``stop``."""
        n = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(self.args.rate))
            if stop.is_set():
                break
            n += 1
            task = asyncio.create_task(self.request(n))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        if self.inflight:
            await asyncio.wait(self.inflight)

    async def request(self, n: int) -> None:
        args = self.args
        snapshot = self.store.current
        assert snapshot is not None
        entry = snapshot.models[args.model]
        backend = entry.backends[0]
        charge = self.guard.charge(route=entry.route.name, tenant="", user="")
        assert charge is not None, "the route is not in the budget's scope"
        started, started_wall = time.monotonic(), time.time()
        estimate = estimate_micro(backend, args.prompt_tokens, args.max_tokens)
        reserved = await charge.reserve(estimate)
        refused = UsageRecord(
            request_id=f"{self.node.id}-{n}",
            route=f"{entry.route.namespace}/{entry.route.name}",
            model=entry.name,
            backend="",
            provider="",
            tenant="",
            user="",
            input_tokens=0,
            output_tokens=0,
            cost_micro_usd=0,
            outcome="budget_exceeded",
            latency_seconds=0.0,
            started_at=started_wall,
            http_status=429,
            config_version=self.store.version,
            budgets=charge.names,
        )
        if isinstance(reserved, BudgetRefusal):
            self.refused += 1
            reason = reserved.reason
            why = (
                "exhausted" if "hard limit" in reason else "unreachable" if "reach" in reason else "allowance"
            )
            emit("refuse", self.pod, f"{time.monotonic():.6f}", why)
            self.usage.add(replace(refused, latency_seconds=time.monotonic() - started))
            return
        admitted = time.monotonic()
        await asyncio.sleep(self.rng.uniform(args.latency_min, args.latency_max))
        usage = Usage(
            input_tokens=round(args.prompt_tokens * self.rng.uniform(0.8, 1.2)),
            output_tokens=round(args.max_tokens * self.rng.uniform(0.25, 1.0)),
        )
        cost = cost_micro(backend, usage)
        reserved.settle(cost)
        answered = replace(
            refused,
            backend=backend.name,
            provider=backend.provider,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_micro_usd=cost,
            outcome="ok",
            latency_seconds=time.monotonic() - started,
            region=backend.region,
            attempts=1,
            http_status=200,
            provider_model=backend.target.model,
        )
        self.usage.add(answered)
        self.admitted += 1
        self.spent += cost
        self.largest_cost = max(self.largest_cost, cost)
        emit("admit", self.pod, f"{admitted:.6f}", estimate, cost)

    async def stop(self) -> None:
        """As ``Sidecar.stop``: requests done, then leases returned, then usage drained."""
        await self.guard.stop()
        await self.client.stop(drain_seconds=10.0)
        stats: dict[str, Any] = {
            "admitted": self.admitted,
            "refused": self.refused,
            "spent_micro_usd": self.spent,
            "largest_cost_micro_usd": self.largest_cost,
            "events": self.events,
            "usage_batches_sent": self.client.reporter.batches_sent,
            "usage_batches_resent": self.client.reporter.batches_resent,
            "usage_records_unacked": self.client.reporter.unacked_records + len(self.usage),
            "connects": self.client.connects,
        }
        emit("stats", self.pod, json.dumps(stats, separators=(",", ":")))


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sidecars: list[SimSidecar] = []
    starting: list[asyncio.Task[None]] = []
    serving: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="llmroute-bench-budget-") as tmp:
        while line := await reader.readline():
            word, _, token = line.decode().strip().partition(" ")
            if word == "go":
                serving += [asyncio.create_task(s.serve(stop)) for s in sidecars]
            elif word and token:
                token_file = Path(tmp) / f"{word}.token"
                token_file.write_text(token)
                sidecar = SimSidecar(args, word, token_file, random.Random(rng.random()))
                sidecars.append(sidecar)
                starting.append(asyncio.create_task(sidecar.start()))
        stop.set()
        await asyncio.gather(*serving, return_exceptions=True)
        for task in starting:
            task.cancel()
        stops = [asyncio.create_task(asyncio.wait_for(s.stop(), 30.0)) for s in sidecars]
        for sidecar, result in zip(
            sidecars, await asyncio.gather(*stops, return_exceptions=True), strict=True
        ):
            if isinstance(result, BaseException):
                emit("err", sidecar.pod, f"stop: {type(result).__name__}: {result}".replace("\n", " ")[:300])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second per sidecar")
    parser.add_argument("--prompt-tokens", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=300)
    parser.add_argument("--latency-min", type=float, default=0.2)
    parser.add_argument("--latency-max", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=11)
    logging.basicConfig(level=logging.ERROR)  # the operator's 25 s lease warm-up is expected
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
