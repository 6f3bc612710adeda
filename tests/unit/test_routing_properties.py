"""Properties of the planner over random configs, regions, requests and availability:

- residency is never violated: every candidate is in an allowed region, whatever else happens;
- candidates are always distinct backends of the model (or of the matched rule), none invented;
- a weighted split converges to its weights over many users, and each user stays on one arm
  (across calls, sidecars and the declared order of the arms).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.config.snapshot import BackendEntry, ModelEntry
from llmroute_sidecar.routing import RoutingRefused, plan, strategies

from .routing_support import backend, entry, hints, rule

REGIONS = ["us-east-1", "eu-west-1", "eu-central-1", "ap-south-1"]
STRATEGY_NAMES = ["fallback", "weighted", "cost", "latency", "complexity", ""]


@st.composite
def backends(draw: st.DrawFn) -> list[pb.Backend]:
    count = draw(st.integers(1, 8))
    return [
        backend(
            f"b{i}",
            region=draw(st.sampled_from(REGIONS)),
            tier=draw(st.sampled_from(["small", "medium", "large", ""])),
            prices=(draw(st.floats(0, 50)), draw(st.floats(0, 50))),
            window=draw(st.sampled_from([0, 500, 4000, 128_000])),
            tools=draw(st.booleans()),
            vision=draw(st.booleans()),
        )
        for i in range(count)
    ]


@st.composite
def routed_models(draw: st.DrawFn) -> tuple[ModelEntry, set[str], set[str]]:
    """A model entry, the regions it allows (empty: all), and every backend name it may use."""
    pool = draw(backends())
    all_names = [b.name for b in pool]
    names = draw(st.lists(st.sampled_from(all_names), min_size=1, unique=True))
    strategy = draw(st.sampled_from(STRATEGY_NAMES))
    split = {n: draw(st.integers(0, 100)) for n in names} if strategy == "weighted" else None
    allowed = draw(st.lists(st.sampled_from(REGIONS), unique=True, max_size=3))
    rule_names = draw(st.lists(st.sampled_from(all_names), min_size=1, unique=True))
    rules = [rule(rule_names, tier="premium", strategy=draw(st.sampled_from(STRATEGY_NAMES)))]
    model = entry(
        pool,
        names=names,
        strategy=strategy,
        split=split,
        allowed=allowed,
        prefer_local=draw(st.booleans()),
        rules=rules,
        overflow=draw(st.sampled_from(["reject", "truncate-oldest"])),
    )
    return model, set(allowed), set(names) | set(rule_names)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    roles = st.sampled_from(["system", "user", "assistant", "user"])
    messages = [
        {"role": draw(roles), "content": "word " * draw(st.integers(0, 1500))}
        for _ in range(draw(st.integers(1, 6)))
    ]
    body: dict[str, Any] = {"model": "chat", "messages": messages, "max_tokens": draw(st.integers(1, 3000))}
    if draw(st.booleans()):
        body["tools"] = [{"type": "function", "function": {"name": "f"}}]
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    routed_models(),
    requests(),
    st.sampled_from(["", *REGIONS]),
    st.sets(st.sampled_from([f"b{i}" for i in range(8)])),
    st.sampled_from(["", "premium"]),
    st.text(max_size=8),
)
def test_residency_is_never_violated_and_candidates_are_the_models_own(
    routed: tuple[ModelEntry, set[str], set[str]],
    body: dict[str, Any],
    region: str,
    down: set[str],
    tier: str,
    user: str,
) -> None:
    model, allowed, usable = routed

    def available(b: BackendEntry) -> bool:
        return b.name not in down

    def latency(b: BackendEntry, stream: bool) -> float | None:
        return None if b.name in down else float(len(b.name))

    try:
        decision = plan(
            model,
            body,
            hints(tier=tier, user=user),
            region=region,
            health=available,
            latency=latency,
            rng=random.Random(0),
        )
    except RoutingRefused as refused:
        if refused.reason == "residency":
            assert allowed
            by_name = model.backends_by_name
            premium = [by_name[n] for n in model.route.rules[0].backends]
            candidates = premium if tier == "premium" else model.backends
            assert all(b.region not in allowed for b in candidates)
        return
    chosen = [b.name for b in decision.candidates]
    assert chosen, "a decision always has a candidate"
    assert len(chosen) == len(set(chosen))
    assert set(chosen) <= usable
    if allowed:
        assert all(b.region in allowed for b in decision.candidates)
    assert len(decision.body["messages"]) + decision.truncated == len(body["messages"])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 100), min_size=2, max_size=4),
    st.randoms(use_true_random=False),
)
def test_weights_converge_to_their_split_and_users_stick(weights: list[int], rnd: random.Random) -> None:
    model = entry([backend(f"arm{i}") for i in range(len(weights))], strategy="weighted")
    arms = list(model.backends)
    split = {b.name: w for b, w in zip(arms, weights, strict=True)}
    salt = rnd.getrandbits(32)
    users = [f"user-{salt}-{i}" for i in range(4000)]
    firsts = Counter(strategies.by_weight(arms, split, f"user:{u}")[0].name for u in users)
    total = sum(weights)
    for name, weight in split.items():
        assert abs(firsts[name] / len(users) - weight / total) < 0.05, (firsts, split)
    # Stickiness: the same user gets the same arm again, in another "sidecar" (a fresh list),
    # and whatever the declared order of the arms.
    shuffled = arms[:]
    rnd.shuffle(shuffled)
    for u in users[:200]:
        first = strategies.by_weight(arms, split, f"user:{u}")[0].name
        assert strategies.by_weight(list(arms), split, f"user:{u}")[0].name == first
        assert strategies.by_weight(shuffled, split, f"user:{u}")[0].name == first


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=2, max_size=4), st.text(min_size=1, max_size=12))
def test_a_user_stays_on_one_arm_through_the_planner(weights: list[int], user: str) -> None:
    names = [f"arm{i}" for i in range(len(weights))]
    model = entry(
        [backend(n) for n in names], strategy="weighted", split=dict(zip(names, weights, strict=True))
    )
    orders = {
        tuple(b.name for b in plan(model, {"model": "chat", "messages": []}, hints(user=user)).candidates)
        for _ in range(5)
    }
    assert len(orders) == 1
