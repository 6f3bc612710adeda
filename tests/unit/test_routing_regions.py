"""Residency (a hard filter with a clear 503) and locality (a stable preference)."""

from __future__ import annotations

import pytest

from llmroute_sidecar.config.snapshot import BackendEntry
from llmroute_sidecar.routing import Decision, RoutingRefused, plan, regions

from .routing_support import backend, chat, entry, hints

POOL = [
    backend("us-1", region="us-east-1"),
    backend("eu-1", region="eu-west-1"),
    backend("us-2", region="us-east-1"),
    backend("eu-2", region="eu-central-1"),
]


def names(decision: Decision) -> list[str]:
    return [b.name for b in decision.candidates]


def test_allowed_regions_drop_every_other_backend() -> None:
    model = entry(POOL, allowed=["eu-west-1", "eu-central-1"])
    decision = plan(model, chat(), hints())
    assert names(decision) == ["eu-1", "eu-2"]
    assert decision.excluded_for("residency") == ["us-1", "us-2"]
    assert decision.allowed_regions == ("eu-west-1", "eu-central-1")
    assert "residency rule" in decision.residency_note() and "us-1" in decision.residency_note()


def test_outside_backends_stay_out_even_when_every_allowed_one_is_unhealthy() -> None:
    model = entry(POOL, allowed=["eu-west-1", "eu-central-1"])
    decision = plan(model, chat(), hints(), health=lambda b: b.region.startswith("us"))
    assert names(decision) == ["eu-1", "eu-2"]


def test_no_backend_in_the_allowed_regions_is_a_503_naming_residency() -> None:
    model = entry(POOL, allowed=["ap-south-1"])
    with pytest.raises(RoutingRefused) as caught:
        plan(model, chat(), hints())
    error = caught.value
    assert (error.status, error.code, error.reason) == (503, "no_backend_in_allowed_regions", "residency")
    assert "regions.allowed" in error.message and "ap-south-1" in error.message
    assert "nothing was sent" in error.message and "us-1 (us-east-1)" in error.message


def test_capability_errors_say_when_residency_narrowed_the_choice() -> None:
    pool = [backend("us-vision", region="us-east-1", vision=True), backend("eu-text", region="eu-west-1")]
    model = entry(pool, allowed=["eu-west-1"])
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = {"model": "chat", "messages": [{"role": "user", "content": [image]}]}
    with pytest.raises(RoutingRefused) as caught:
        plan(model, body, hints())
    assert caught.value.status == 400
    assert "in the allowed regions supports chat and vision" in caught.value.message


def test_prefer_local_moves_same_region_backends_first_and_keeps_order_within_groups() -> None:
    model = entry(POOL, prefer_local=True)
    decision = plan(model, chat(), hints(), region="eu-central-1")
    assert names(decision) == ["eu-2", "us-1", "eu-1", "us-2"]
    assert decision.region_choice == "local"
    assert names(plan(model, chat(), hints(), region="us-east-1")) == ["us-1", "us-2", "eu-1", "eu-2"]


def test_prefer_local_without_a_local_backend_or_region_changes_nothing() -> None:
    model = entry(POOL, prefer_local=True)
    assert names(plan(model, chat(), hints(), region="sa-east-1")) == ["us-1", "eu-1", "us-2", "eu-2"]
    unknown = plan(model, chat(), hints(), region="")
    assert names(unknown) == ["us-1", "eu-1", "us-2", "eu-2"]
    assert unknown.region_choice == "unknown"


def test_locality_is_off_unless_the_route_prefers_it() -> None:
    model = entry(POOL, prefer_local=False)
    decision = plan(model, chat(), hints(), region="eu-west-1")
    assert names(decision) == ["us-1", "eu-1", "us-2", "eu-2"]
    assert decision.region_choice == "remote"


def test_locality_keeps_the_strategy_order_within_each_group() -> None:
    pool = [
        backend("us-dear", region="us-east-1", prices=(9, 9)),
        backend("eu-dear", region="eu-west-1", prices=(8, 8)),
        backend("us-cheap", region="us-east-1", prices=(1, 1)),
        backend("eu-cheap", region="eu-west-1", prices=(2, 2)),
    ]
    model = entry(pool, strategy="cost", prefer_local=True)
    assert names(plan(model, chat(), hints(), region="eu-west-1")) == [
        "eu-cheap",
        "eu-dear",
        "us-cheap",
        "us-dear",
    ]


def test_healthy_local_first_then_healthy_remote_then_the_unhealthy() -> None:
    model = entry(POOL, prefer_local=True)
    down = {"us-1", "eu-1"}

    def available(b: BackendEntry) -> bool:
        return b.name not in down

    decision = plan(model, chat(), hints(), region="us-east-1", health=available)
    assert names(decision) == ["us-2", "eu-2", "us-1", "eu-1"]
    assert decision.demoted == ("us-1", "eu-1")


def test_region_helpers() -> None:
    backends = entry(POOL).backends
    kept, out = regions.allowed(backends, entry(POOL, allowed=["eu-west-1"]).route.regions)
    assert [b.name for b in kept] == ["eu-1"] and len(out) == 3
    assert regions.region_choice(backends[0], "us-east-1") == "local"
    assert regions.region_choice(backends[0], "eu-west-1") == "remote"
