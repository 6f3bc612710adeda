"""``python -m bench.routing`` (or ``python bench/routing/run.py``): how long routing decisions take.

Times :func:`llmroute_sidecar.routing.plan` (rules, residency, capabilities, context fit, strategy,
locality, health) over realistic configs and requests, one call at a time with ``perf_counter_ns``,
after a warm-up, garbage collector on (as in the sidecar). Prints wall-clock p50/p99/max in
microseconds per scenario, and on-CPU p50/p99 (``thread_time``: what the logic costs when the process
is not preempted, so a busy machine does not hide it); the target is p99 < 100 µs. ``--json PATH``
also writes the figures.
No sockets, no providers: this is the decision logic alone, the part the attempt loop waits for.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.config.snapshot import BackendEntry, ModelEntry, build_snapshot
from llmroute_sidecar.routing import Decision, plan
from llmroute_sidecar.service import Hints

__all__ = ["main"]

TARGET_P99_US = 100.0
Json = dict[str, Any]

SYSTEM = (
    "You are the support assistant of ACME Corp. Answer in the customer's language, cite the "
    "knowledge-base article you used, never promise refunds, and escalate legal questions. "
) * 6
CODE_QUESTION = (
    "Refactor this function so it never raises, keep the public signature, and add unit tests:\n"
    "```python\nimport json\n\ndef load(path):\n    with open(path) as f:\n        return json.load(f)\n```\n"
    "It must run on Python 3.11 and must not use third-party packages. Explain the trade-offs."
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Look up {name} in the ACME systems by id or free text.",
            "parameters": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
    for name in ("orders", "customers", "invoices", "shipments")
]


def _backend(
    name: str, region: str, tier: pb.Tier.ValueType, prices: tuple[float, float], window: int
) -> pb.Backend:
    return pb.Backend(
        name=name,
        provider=pb.PROVIDER_OPENAI_COMPATIBLE,
        model=name,
        endpoint="http://127.0.0.1:1/v1",
        region=region,
        pricing=pb.Pricing(input_per_million=prices[0], output_per_million=prices[1]),
        context_window=window,
        tier=tier,
        capabilities=pb.Capabilities(chat=True, tools=True, json_mode=True, vision=name.startswith("gpt")),
    )


BACKENDS = [
    _backend("gpt4o-us", "us-east-1", pb.TIER_LARGE, (2.5, 10.0), 128_000),
    _backend("gpt4o-eu", "eu-west-1", pb.TIER_LARGE, (2.5, 10.0), 128_000),
    _backend("claude-eu", "eu-central-1", pb.TIER_LARGE, (3.0, 15.0), 200_000),
    _backend("mini-eu", "eu-west-1", pb.TIER_SMALL, (0.15, 0.6), 128_000),
    _backend("llama-local", "eu-west-1", pb.TIER_MEDIUM, (0.0, 0.0), 8_000),
    _backend("haiku-eu", "eu-central-1", pb.TIER_SMALL, (0.8, 4.0), 200_000),
]
NAMES = [b.name for b in BACKENDS]


def _entry(
    model: pb.LogicalModel, *, rules: list[pb.Rule] | None = None, allowed: list[str] | None = None
) -> ModelEntry:
    route = pb.Route(
        name="bench",
        namespace="bench",
        models=[model],
        rules=rules or [],
        backends=BACKENDS,
        regions=pb.RegionPolicy(allowed=allowed or [], prefer_local=True),
    )
    return build_snapshot(pb.RouterConfig(namespace="bench", region="eu-west-1", routes=[route])).models[
        model.name
    ]


RULES = [
    pb.Rule(name="premium", match=pb.RuleMatch(tier="premium"), backends=["gpt4o-eu", "claude-eu"]),
    pb.Rule(
        name="team-search", match=pb.RuleMatch(headers={"x-team": "search"}), backends=["mini-eu", "haiku-eu"]
    ),
    pb.Rule(
        name="code",
        match=pb.RuleMatch(task="code_generation"),
        backends=["claude-eu", "gpt4o-eu"],
        strategy=pb.STRATEGY_LATENCY,
    ),
]
HARD = pb.RuleMatch()
HARD.complexity_above = 0.8
RULES_WITH_COMPLEXITY = [*RULES, pb.Rule(name="hard", match=HARD, backends=["claude-eu"])]


def _chat(messages: list[Json], **extra: Any) -> Json:
    return {"model": "chat", "messages": messages, **extra}


def _conversation(turns: int, words: int) -> list[Json]:
    messages: list[Json] = [{"role": "system", "content": SYSTEM}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i}: " + "detail " * words})
        messages.append({"role": "assistant", "content": f"answer {i}: " + "reply " * words})
    messages.append({"role": "user", "content": CODE_QUESTION})
    return messages


@dataclass(frozen=True)
class Scenario:
    name: str
    entry: ModelEntry
    body: Json
    hints: Callable[[int], Hints]
    stream: bool = False


def _hints(**fields: Any) -> Callable[[int], Hints]:
    headers = {"content-type": "application/json", "authorization": "Bearer x", "x-team": "web"}

    def make(i: int) -> Hints:
        return Hints(headers=headers, request_id="bench", **fields)

    return make


def _per_user(i: int) -> Hints:
    return Hints(user=f"user-{i % 5000}", request_id="bench", headers={"x-llmroute-user": f"user-{i % 5000}"})


def scenarios() -> list[Scenario]:
    fallback = pb.LogicalModel(name="chat", strategy=pb.STRATEGY_FALLBACK, backends=NAMES[:3])
    weighted = pb.LogicalModel(
        name="chat",
        strategy=pb.STRATEGY_WEIGHTED,
        backends=NAMES,
        split=[
            pb.WeightedBackend(backend=n, weight=w) for n, w in zip(NAMES[:4], (40, 30, 20, 10), strict=True)
        ],
    )
    cost = pb.LogicalModel(name="chat", strategy=pb.STRATEGY_COST, backends=NAMES)
    latency = pb.LogicalModel(name="chat", strategy=pb.STRATEGY_LATENCY, backends=NAMES)
    complexity = pb.LogicalModel(
        name="chat",
        strategy=pb.STRATEGY_COMPLEXITY,
        backends=NAMES,
        complexity=pb.ComplexityThresholds(small=0.3, medium=0.7),
    )
    truncating = pb.LogicalModel(
        name="chat",
        strategy=pb.STRATEGY_FALLBACK,
        backends=["llama-local"],
        context_overflow=pb.CONTEXT_OVERFLOW_POLICY_TRUNCATE_OLDEST,
    )
    short = _chat([{"role": "user", "content": "What are your opening hours?"}])
    support = _chat(_conversation(4, 60), tools=TOOLS, max_tokens=512)
    long_prompt = _chat(_conversation(20, 400), max_tokens=1024)  # ~80 kB of text
    return [
        Scenario("fallback, short chat", _entry(fallback), short, _hints()),
        Scenario("weighted 4 arms, sticky users, rules", _entry(weighted, rules=RULES), short, _per_user),
        Scenario(
            "cost, 6 backends, tools, residency",
            _entry(cost, allowed=["eu-west-1", "eu-central-1"]),
            support,
            _hints(),
        ),
        Scenario(
            "latency, streaming, rule match",
            _entry(latency, rules=RULES),
            support,
            _hints(task="code_generation"),
            True,
        ),
        Scenario(
            "complexity + complexity rule, support chat",
            _entry(complexity, rules=RULES_WITH_COMPLEXITY),
            support,
            _hints(),
        ),
        Scenario("complexity, 80 kB conversation", _entry(complexity), long_prompt, _hints()),
        Scenario("truncate-oldest, 80 kB into 8k window", _entry(truncating), long_prompt, _hints()),
    ]


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run(iterations: int, warmup: int) -> list[Json]:
    rng = random.Random(1)
    latencies = {name: 0.2 + 0.1 * i for i, name in enumerate(NAMES[:-1])}

    def latency(backend: BackendEntry, stream: bool) -> float | None:
        return latencies.get(backend.name)

    def healthy(backend: BackendEntry) -> bool:
        return backend.name != "gpt4o-us"

    def call(scenario: Scenario, hints: Hints) -> Decision:
        return plan(
            scenario.entry,
            scenario.body,
            hints,
            region="eu-west-1",
            stream=scenario.stream,
            health=healthy,
            latency=latency,
            rng=rng,
        )

    results: list[Json] = []
    wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for scenario in scenarios():
        hints = [scenario.hints(i) for i in range(iterations)]
        for i in range(warmup):
            call(scenario, hints[i % iterations])
        wall: list[float] = []
        cpu: list[float] = []
        for i in range(iterations):
            cpu_start, wall_start = cpu_clock(), wall_clock()
            call(scenario, hints[i])
            wall_end, cpu_end = wall_clock(), cpu_clock()
            wall.append((wall_end - wall_start) / 1000)
            cpu.append((cpu_end - cpu_start) / 1000)
        wall.sort()
        cpu.sort()
        results.append(
            {
                "scenario": scenario.name,
                "iterations": iterations,
                "p50_us": round(_percentile(wall, 0.50), 1),
                "p99_us": round(_percentile(wall, 0.99), 1),
                "max_us": round(wall[-1], 1),
                "mean_us": round(statistics.fmean(wall), 1),
                "cpu_p50_us": round(_percentile(cpu, 0.50), 1),
                "cpu_p99_us": round(_percentile(cpu, 0.99), 1),
                "decision": call(scenario, hints[0]).explain(),
            }
        )
    return results


def noise(iterations: int) -> float:
    """p99/p50 of a fixed pure-Python workload timed the same way (on-CPU): how much this machine
    alone spreads timings (SMT siblings, other processes, frequency changes); 1.0 is a steady machine."""

    def work() -> int:
        return sum(range(1500))

    for _ in range(iterations // 10):
        work()
    samples: list[float] = []
    clock = time.thread_time_ns
    for _ in range(iterations):
        start = clock()
        work()
        samples.append(clock() - start)
    samples.sort()
    return _percentile(samples, 0.99) / max(1.0, _percentile(samples, 0.50))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=20_000, help="timed calls per scenario")
    parser.add_argument("--warmup", type=int, default=2_000, help="untimed calls per scenario first")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--verbose", action="store_true", help="print each scenario's decision")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the worst wall-clock p99 misses the target"
    )
    args = parser.parse_args(argv)
    spread = noise(args.iterations)
    results = run(args.iterations, args.warmup)
    width = max(len(r["scenario"]) for r in results)
    print(
        f"{'scenario':<{width}}  {'p50 µs':>7}  {'p99 µs':>7}  {'max µs':>8}  {'cpu p50':>7}  {'cpu p99':>7}"
    )
    for r in results:
        print(
            f"{r['scenario']:<{width}}  {r['p50_us']:>7.1f}  {r['p99_us']:>7.1f}  {r['max_us']:>8.1f}"
            f"  {r['cpu_p50_us']:>7.1f}  {r['cpu_p99_us']:>7.1f}"
        )
        if args.verbose:
            print(f"  {r['decision']}")
    worst = max(r["p99_us"] for r in results)
    worst_cpu = max(r["cpu_p99_us"] for r in results)
    ok = worst < TARGET_P99_US
    print(
        f"worst p99: {worst:.1f} µs wall, {worst_cpu:.1f} µs on-CPU (target < {TARGET_P99_US:.0f} µs): "
        f"{'OK' if ok else 'MISSED'}"
    )
    print(f"machine noise: a fixed workload's p99/p50 is {spread:.2f} here (1.0 on a steady machine)")
    if not ok and worst_cpu < TARGET_P99_US:
        print("  (wall-clock p99 above on-CPU p99: the process was preempted; a busy machine?)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "processor": platform.processor(),
            "noise_p99_over_p50": round(spread, 2),
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
