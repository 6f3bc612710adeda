"""The five orderings, directly and through the planner."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from llmroute_sidecar.config.snapshot import BackendEntry, ModelEntry
from llmroute_sidecar.routing import plan, strategies
from llmroute_sidecar.routing.tokens import Estimate

from .routing_support import backend, chat, entry, hints


def names(backends: Iterable[BackendEntry]) -> list[str]:
    return [b.name for b in backends]


def test_fallback_keeps_the_declared_order() -> None:
    model = entry([backend("a"), backend("b"), backend("c")], names=["c", "a", "b"])
    decision = plan(model, chat(), hints())
    assert names(decision.candidates) == ["c", "a", "b"]
    assert decision.strategy == "fallback"


def test_unspecified_strategy_is_fallback() -> None:
    model = entry([backend("a"), backend("b")], strategy="")
    assert plan(model, chat(), hints()).strategy == "fallback"


# -- weighted ---------------------------------------------------------------------------------------


def weighted_model() -> ModelEntry:
    return entry(
        [backend("a"), backend("b"), backend("c"), backend("d")],
        strategy="weighted",
        names=["a", "b", "c", "d"],
        split={"a": 70, "b": 30, "c": 0},
    )


def test_a_user_sticks_to_one_arm_and_the_others_follow() -> None:
    model = weighted_model()
    first = plan(model, chat(), hints(user="alice"))
    for _ in range(20):
        again = plan(model, chat(), hints(user="alice"))
        assert names(again.candidates) == names(first.candidates)
    order = names(first.candidates)
    assert set(order[:2]) == {"a", "b"}  # positive-weight arms first, by the user's draws
    assert order[2:] == ["c", "d"]  # zero-weight arm and non-arms follow as declared


def test_the_split_converges_to_its_weights_over_users() -> None:
    model = weighted_model()
    firsts = Counter(plan(model, chat(), hints(user=f"user-{i}")).candidates[0].name for i in range(4000))
    assert set(firsts) == {"a", "b"}
    assert abs(firsts["a"] / 4000 - 0.7) < 0.03


def test_the_tenant_is_the_key_when_no_user_is_known() -> None:
    model = weighted_model()
    by_tenant = {names(plan(model, chat(), hints(tenant="acme")).candidates)[0] for _ in range(10)}
    assert len(by_tenant) == 1


def test_without_a_key_requests_spread_by_weight_using_the_rng() -> None:
    model = weighted_model()
    rng = random.Random(7)
    firsts = Counter(plan(model, chat(), hints(), rng=rng).candidates[0].name for _ in range(2000))
    assert abs(firsts["a"] / 2000 - 0.7) < 0.05
    once, twice = random.Random(7), random.Random(7)
    first = [plan(model, chat(), hints(), rng=once).candidates[0].name for _ in range(5)]
    assert first == [plan(model, chat(), hints(), rng=twice).candidates[0].name for _ in range(5)]


def test_removing_an_arm_moves_only_its_users() -> None:
    full = entry([backend(n) for n in "abc"]).backends
    without_c = [b for b in full if b.name != "c"]
    split = {"a": 40, "b": 30, "c": 30}
    for i in range(500):
        key = f"u{i}"
        before = strategies.by_weight(full, split, key)[0].name
        after = strategies.by_weight(without_c, split, key)[0].name
        if before != "c":
            assert after == before


def test_a_rule_without_split_arms_weighs_its_backends_equally() -> None:
    pool = entry([backend("x"), backend("y")]).backends
    firsts = Counter(strategies.by_weight(pool, {"other": 100}, f"k{i}")[0].name for i in range(2000))
    assert abs(firsts["x"] / 2000 - 0.5) < 0.05


# -- cost -------------------------------------------------------------------------------------------


def test_cost_puts_the_cheapest_for_this_request_first() -> None:
    # cheap-in is cheap on input but dear on output; cheap-out the reverse.
    model = entry(
        [
            backend("dear", prices=(10, 30)),
            backend("cheap-in", prices=(0.1, 40)),
            backend("cheap-out", prices=(5, 1)),
        ],
        strategy="cost",
    )
    short_answer = plan(model, chat("x" * 40_000, max_tokens=10), hints())
    assert names(short_answer.candidates) == ["cheap-in", "cheap-out", "dear"]
    long_answer = plan(model, chat("hi", max_tokens=4000), hints())
    assert names(long_answer.candidates) == ["cheap-out", "dear", "cheap-in"]


def test_cost_ties_keep_the_declared_order() -> None:
    model = entry([backend("a"), backend("b"), backend("free", prices=(0, 0))], strategy="cost")
    assert names(plan(model, chat(), hints()).candidates) == ["free", "a", "b"]


def test_cost_only_ranks_candidates_that_can_serve_the_request() -> None:
    model = entry(
        [backend("cheap-no-tools", prices=(0.1, 0.1), tools=False), backend("tools", prices=(5, 5))],
        strategy="cost",
    )
    decision = plan(model, chat(tools=[{"type": "function", "function": {"name": "f"}}]), hints())
    assert names(decision.candidates) == ["tools"]


# -- latency ----------------------------------------------------------------------------------------


def test_latency_puts_the_fastest_first_and_unknown_after() -> None:
    model = entry([backend("slow"), backend("new"), backend("fast"), backend("newer")], strategy="latency")
    seen: list[tuple[str, bool]] = []

    def latency(b: BackendEntry, stream: bool) -> float | None:
        seen.append((b.name, stream))
        return {"slow": 2.0, "fast": 0.3}.get(b.name)

    decision = plan(model, chat(), hints(), latency=latency, stream=True)
    assert names(decision.candidates) == ["fast", "slow", "new", "newer"]
    assert all(stream for _, stream in seen)


def test_latency_without_a_source_keeps_the_declared_order() -> None:
    model = entry([backend("a"), backend("b")], strategy="latency")
    assert names(plan(model, chat(), hints()).candidates) == ["a", "b"]


# -- complexity -------------------------------------------------------------------------------------


def tiered() -> ModelEntry:
    return entry(
        [backend("big", tier="large"), backend("mid", tier="medium"), backend("tiny", tier="small")],
        strategy="complexity",
        thresholds=(0.3, 0.7),
    )


def test_a_trivial_prompt_goes_to_the_small_tier_first() -> None:
    decision = plan(tiered(), chat("hi"), hints())
    assert names(decision.candidates) == ["tiny", "mid", "big"]
    assert decision.tier == "small"
    assert decision.complexity is not None and decision.complexity.score < 0.3


def test_a_hard_prompt_goes_to_the_large_tier_first() -> None:
    hard = (
        "Prove step by step why this algorithm's complexity is optimal, derive the equation, then "
        "refactor the Python code below:\n```python\ndef f(x):\n    return x\n```\n" + "context " * 3000
    )
    decision = plan(tiered(), chat(hard), hints())
    assert decision.tier == "large"
    assert names(decision.candidates) == ["big", "mid", "tiny"]


def test_tier_order_prefers_the_larger_neighbour_at_equal_distance() -> None:
    pool = entry(
        [backend("s", tier="small"), backend("l", tier="large"), backend("m", tier="medium")]
    ).backends
    assert names(strategies.by_tier(pool, 2)) == ["m", "l", "s"]
    assert names(strategies.by_tier(pool, 1)) == ["s", "m", "l"]
    unspecified = entry([backend("u", tier=""), backend("s", tier="small")]).backends
    assert names(strategies.by_tier(unspecified, 2)) == ["u", "s"]


def test_by_cost_uses_both_directions_of_the_estimate() -> None:
    pool = entry([backend("in", prices=(1, 100)), backend("out", prices=(100, 1))]).backends
    assert names(strategies.by_cost(pool, Estimate(1000, 1))) == ["in", "out"]
    assert names(strategies.by_cost(pool, Estimate(1, 1000))) == ["out", "in"]
