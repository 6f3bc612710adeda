"""preferLocal narrows the candidates to the healthy local ones before a weighted split shares traffic.

The documented semantics (the CRD's regions.preferLocal, docs/routing.md): while a local candidate
is healthy the strategy chooses among the local ones, a split's weights renormalised over its local
arms; remote arms get traffic by their weights only when no local arm is healthy; backends outside
the split stay fallbacks after every arm. Distributions are counted over many users (or seeded
random keys), with tolerances far tighter than the gaps a wrong semantics would leave.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable

import pytest

from llmroute_sidecar.config.snapshot import BackendEntry, ModelEntry
from llmroute_sidecar.routing import plan
from llmroute_sidecar.routing.placement import leading, place

from .routing_support import backend, chat, entry, hints

EU, US = "eu-west-1", "us-east-1"
USERS = 20_000
TOLERANCE = 0.02  # 3+ standard deviations at 20,000 draws for every share below


def split_model(
    arms: dict[str, tuple[str, int]], *, fallbacks: Iterable[tuple[str, str]] = (), prefer_local: bool = True
) -> ModelEntry:
    """A weighted model: ``arms`` name -> (region, weight), then non-arm ``fallbacks`` (name, region)."""
    pool = [backend(name, region=region) for name, (region, _) in arms.items()]
    pool += [backend(name, region=region) for name, region in fallbacks]
    return entry(
        pool,
        strategy="weighted",
        split={name: weight for name, (_, weight) in arms.items()},
        prefer_local=prefer_local,
    )


def firsts(
    model: ModelEntry,
    *,
    region: str = EU,
    health: Callable[[BackendEntry], bool] | None = None,
    users: int = USERS,
) -> dict[str, float]:
    """Share of users whose first candidate is each backend."""
    counts = Counter(
        plan(model, chat(), hints(user=f"u{i}"), region=region, health=health).candidates[0].name
        for i in range(users)
    )
    return {name: count / users for name, count in counts.items()}


def down(*names: str) -> Callable[[BackendEntry], bool]:
    return lambda b: b.name not in names


def assert_shares(observed: dict[str, float], expected: dict[str, float]) -> None:
    assert set(observed) == {name for name, share in expected.items() if share > 0}, observed
    for name, share in expected.items():
        assert abs(observed.get(name, 0.0) - share) < TOLERANCE, (name, observed, expected)


MIXED = {"eu-a": (EU, 60), "eu-b": (EU, 20), "us-c": (US, 20)}


def test_the_split_renormalises_over_the_local_arms() -> None:
    assert_shares(firsts(split_model(MIXED)), {"eu-a": 0.75, "eu-b": 0.25, "us-c": 0.0})


def test_remote_arms_follow_the_local_ones_as_fallbacks() -> None:
    model = split_model(MIXED)
    for i in range(200):
        order = [b.name for b in plan(model, chat(), hints(user=f"u{i}"), region=EU).candidates]
        assert set(order[:2]) == {"eu-a", "eu-b"} and order[2] == "us-c"


def test_without_prefer_local_the_declared_weights_hold() -> None:
    shares = firsts(split_model(MIXED, prefer_local=False))
    assert_shares(shares, {"eu-a": 0.60, "eu-b": 0.20, "us-c": 0.20})


def test_a_sidecar_with_no_local_arm_splits_by_the_declared_weights() -> None:
    shares = firsts(split_model(MIXED), region="ap-south-1")
    assert_shares(shares, {"eu-a": 0.60, "eu-b": 0.20, "us-c": 0.20})


def test_when_no_local_arm_is_healthy_the_remote_arms_share_by_their_weights() -> None:
    model = split_model({"eu-a": (EU, 50), "us-c": (US, 30), "us-d": (US, 20)})
    shares = firsts(model, health=down("eu-a"))
    assert_shares(shares, {"us-c": 0.6, "us-d": 0.4})


def test_one_unhealthy_local_arm_sends_its_users_to_the_other_local_arms() -> None:
    model = split_model({"eu-a": (EU, 40), "eu-b": (EU, 40), "us-c": (US, 20)})
    assert_shares(firsts(model, health=down("eu-a")), {"eu-b": 1.0})


def test_users_stick_and_only_the_users_of_a_failed_local_arm_move() -> None:
    model = split_model({"eu-a": (EU, 40), "eu-b": (EU, 40), "us-c": (US, 20)})
    alone = split_model({"eu-a": (EU, 40), "eu-b": (EU, 40)}, prefer_local=False)
    for i in range(2000):
        user = hints(user=f"u{i}")
        before = plan(model, chat(), user, region=EU).candidates[0].name
        assert plan(model, chat(), user, region=EU).candidates[0].name == before
        after = plan(model, chat(), user, region=EU, health=down("eu-b")).candidates[0].name
        assert after == "eu-a"  # eu-a's users stay; eu-b's move to the other local arm, not us-c
        assert plan(alone, chat(), user).candidates[0].name == before  # a user's local arm: as if alone


def test_a_local_backend_outside_the_split_stays_a_fallback_after_every_arm() -> None:
    model = split_model({"us-a": (US, 70), "us-b": (US, 30)}, fallbacks=[("eu-local", EU)])
    shares = firsts(model, users=5000)
    assert shares.get("eu-local", 0.0) == 0.0
    assert abs(shares["us-a"] - 0.7) < 0.03
    order = [b.name for b in plan(model, chat(), hints(user="u1"), region=EU).candidates]
    assert order[2] == "eu-local"


def test_local_fallbacks_outside_the_split_go_before_remote_ones() -> None:
    model = split_model(
        {"eu-a": (EU, 50), "us-b": (US, 50)}, fallbacks=[("us-fallback", US), ("eu-fallback", EU)]
    )
    order = [b.name for b in plan(model, chat(), hints(user="u1"), region=EU).candidates]
    assert order == ["eu-a", "us-b", "eu-fallback", "us-fallback"]


def test_a_healthy_fallback_goes_before_unhealthy_arms() -> None:
    model = split_model({"us-a": (US, 70), "us-b": (US, 30)}, fallbacks=[("eu-local", EU)])
    decision = plan(model, chat(), hints(user="u1"), region=EU, health=down("us-a", "us-b"))
    assert decision.candidates[0].name == "eu-local"
    assert set(decision.demoted) == {"us-a", "us-b"}


def test_requests_without_a_user_spread_over_the_local_arms_by_the_rng() -> None:
    model = split_model(MIXED)
    rng = random.Random(7)
    counts = Counter(
        plan(model, chat(), hints(), region=EU, rng=rng).candidates[0].name for _ in range(USERS)
    )
    assert_shares({k: v / USERS for k, v in counts.items()}, {"eu-a": 0.75, "eu-b": 0.25})


@pytest.mark.parametrize("strategy", ["fallback", "cost", "latency"])
def test_other_strategies_order_the_local_group_then_the_remote_one(strategy: str) -> None:
    pool = [
        backend("us-cheap", region=US, prices=(1, 1)),
        backend("eu-dear", region=EU, prices=(9, 9)),
        backend("eu-cheap", region=EU, prices=(2, 2)),
    ]
    model = entry(pool, strategy=strategy, prefer_local=True)
    order = [b.name for b in plan(model, chat(), hints(), region=EU).candidates]
    assert order[2] == "us-cheap" and set(order[:2]) == {"eu-dear", "eu-cheap"}
    if strategy == "cost":
        assert order[:2] == ["eu-cheap", "eu-dear"]


def test_place_and_its_leading_group() -> None:
    model = split_model({"eu-a": (EU, 50), "us-b": (US, 50)}, fallbacks=[("eu-f", EU)])
    a, b, f = (model.backends_by_name[n] for n in ("eu-a", "us-b", "eu-f"))
    placed, demoted = place([b, a, f], lead=2, region=EU, prefer_local=True, available=None)
    assert [x.name for x in placed] == ["eu-a", "us-b", "eu-f"] and demoted == ()
    assert place([b, a], lead=2, region=EU, prefer_local=False, available=None) == ([b, a], ())
    everything_down = place([b, a], lead=2, region=EU, prefer_local=True, available=lambda _: False)
    assert [x.name for x in everything_down[0]] == ["eu-a", "us-b"] and everything_down[1] == ()
    assert leading([a, f, b], region=EU, prefer_local=True, available=None) == 2
    assert leading([a, f, b], region=EU, prefer_local=False, available=None) == 3
    assert leading([a, f, b], region=EU, prefer_local=True, available=lambda x: x is not f) == 1
    assert leading([b], region=EU, prefer_local=True, available=None) == 1
