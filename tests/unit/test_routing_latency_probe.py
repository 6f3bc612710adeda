"""The latency strategy probes backends it has no estimate for, at a bounded rate, so they get measured.

Documented semantics (the CRD's models[].strategy, docs/routing.md): a healthy backend without a
fresh sample is put first by at most one request every 10 s per backend and sidecar; measured
backends are ordered fastest first; samples go stale after 5 minutes, so a once-slow backend is
re-measured. Clocks are injected; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Callable

from llmroute_sidecar.config.snapshot import BackendEntry, ModelEntry
from llmroute_sidecar.health.latency import LatencyEstimate
from llmroute_sidecar.routing import Decision, LatencyProbes, plan
from llmroute_sidecar.routing.probes import DEFAULT_PROBE_INTERVAL_S

from .routing_support import backend, chat, entry, hints

EU, US = "eu-west-1", "us-east-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def names(decision: Decision) -> list[str]:
    return [b.name for b in decision.candidates]


def latency_of(table: dict[str, float]) -> Callable[[BackendEntry, bool], float | None]:
    return lambda b, stream: table.get(b.name)


def model(*pool: tuple[str, str], prefer_local: bool = False) -> ModelEntry:
    return entry([backend(n, region=r) for n, r in pool], strategy="latency", prefer_local=prefer_local)


THREE = model(("slow", US), ("new", US), ("fast", US))


def route(
    m: ModelEntry,
    probes: LatencyProbes | None,
    table: dict[str, float],
    *,
    health: Callable[[BackendEntry], bool] | None = None,
    region: str = US,
    stream: bool = False,
) -> Decision:
    return plan(
        m,
        chat(),
        hints(),
        region=region,
        latency=latency_of(table),
        probes=probes,
        health=health,
        stream=stream,
    )


def test_an_unmeasured_backend_is_probed_once_per_interval() -> None:
    clock = Clock()
    probes = LatencyProbes(clock=clock)
    table = {"slow": 2.0, "fast": 0.3}
    first = route(THREE, probes, table)
    assert names(first) == ["new", "fast", "slow"]  # the probe, then the latency order as fallback
    assert first.probe == "new" and first.trace()["probe"] == "new" and "probe=new" in first.explain()
    clock.now += DEFAULT_PROBE_INTERVAL_S - 0.01
    later = route(THREE, probes, table)
    assert names(later) == ["fast", "slow", "new"] and later.probe is None
    clock.now += 0.01
    assert route(THREE, probes, table).probe == "new"  # the probe failed (no sample): probe again


def test_probes_are_a_bounded_share_of_traffic_at_any_rate() -> None:
    table = {"slow": 2.0, "fast": 0.3}
    for per_second in (1, 8, 256):  # steps exact in binary: the count is exact too
        clock = Clock()
        probes = LatencyProbes(clock=clock)
        seconds = 60
        probed = 0
        for _ in range(seconds * per_second):
            clock.now += 1 / per_second
            probed += route(THREE, probes, table).probe == "new"
        assert probed == seconds / DEFAULT_PROBE_INTERVAL_S, (per_second, probed)


def test_a_measured_backend_is_ordered_by_its_estimate_and_no_longer_probed() -> None:
    clock = Clock()
    probes = LatencyProbes(clock=clock)
    table = {"slow": 2.0, "fast": 0.3}
    assert route(THREE, probes, table).probe == "new"
    table["new"] = 0.1  # the probe answered quickly
    clock.now += 60
    decision = route(THREE, probes, table)
    assert names(decision) == ["new", "fast", "slow"] and decision.probe is None


def test_a_once_slow_backend_is_re_measured_when_its_samples_go_stale() -> None:
    clock = Clock()
    estimates = {name: LatencyEstimate(clock=clock) for name in ("slow", "fast")}
    estimates["slow"].observe(5.0)
    estimates["fast"].observe(1.0)
    probes = LatencyProbes(clock=clock)

    def latency(b: BackendEntry, stream: bool) -> float | None:
        return estimates[b.name].value()

    pair = model(("slow", US), ("fast", US))

    def first() -> Decision:
        return plan(pair, chat(), hints(), latency=latency, probes=probes)

    for _ in range(290):  # five minutes of traffic, all answered by "fast"
        assert first().candidates[0].name == "fast"
        estimates["fast"].observe(1.0)
        clock.now += 1
    clock.now += 11  # "slow"'s last sample is now older than stale_after (300 s)
    probe = first()
    assert probe.probe == "slow" and probe.candidates[0].name == "slow"
    estimates["slow"].observe(0.2)  # it got faster meanwhile: it wins the traffic back
    assert names(first()) == ["slow", "fast"] and first().probe is None


def test_an_unavailable_backend_is_not_probed_and_keeps_its_slot() -> None:
    clock = Clock()
    probes = LatencyProbes(clock=clock)
    table = {"slow": 2.0, "fast": 0.3}
    held = route(THREE, probes, table, health=lambda b: b.name != "new")
    assert held.probe is None and names(held) == ["fast", "slow", "new"] and held.demoted == ("new",)
    assert route(THREE, probes, table).probe == "new"  # back: probed at once, no slot was spent


def test_with_prefer_local_only_the_local_group_is_probed() -> None:
    clock = Clock()
    probes = LatencyProbes(clock=clock)
    m = model(("eu-fast", EU), ("us-new", US), ("eu-new", EU), prefer_local=True)
    table = {"eu-fast": 0.3}
    decision = route(m, probes, table, region=EU)
    assert names(decision) == ["eu-new", "eu-fast", "us-new"] and decision.probe == "eu-new"
    table["eu-new"] = 0.5
    assert route(m, probes, table, region=EU).probe is None  # us-new would not get traffic anyway
    eu_down = route(m, probes, table, region=EU, health=lambda b: b.region != EU)
    assert eu_down.probe is None  # the remote group: nothing measured in it yet, us-new is first
    assert names(eu_down)[0] == "us-new"


def test_each_unmeasured_backend_has_its_own_slot() -> None:
    clock = Clock()
    probes = LatencyProbes(clock=clock)
    m = model(("fast", US), ("new-1", US), ("new-2", US))
    table = {"fast": 0.3}
    assert [route(m, probes, table).probe for _ in range(3)] == ["new-1", "new-2", None]


def test_when_nothing_is_measured_the_declared_order_stands_and_no_slot_is_spent() -> None:
    clock = Clock()
    probes = LatencyProbes(clock=clock)
    assert names(route(THREE, probes, {})) == ["slow", "new", "fast"]
    assert route(THREE, probes, {"slow": 1.0}).probe == "new"


def test_streams_probe_by_their_own_measure() -> None:
    clock = Clock()
    probes = LatencyProbes(clock=clock)
    seen: list[bool] = []

    def ttft_only(b: BackendEntry, stream: bool) -> float | None:
        seen.append(stream)
        return {"slow": 2.0, "fast": 0.3}.get(b.name) if stream else None

    decision = plan(THREE, chat(), hints(), latency=ttft_only, probes=probes, stream=True)
    assert decision.probe == "new" and all(seen)


def test_without_probe_slots_or_for_other_strategies_nothing_is_probed() -> None:
    table = {"slow": 2.0, "fast": 0.3}
    assert route(THREE, None, table).probe is None
    fallback = entry([backend("slow"), backend("new"), backend("fast")], strategy="fallback")
    decision = plan(fallback, chat(), hints(), latency=latency_of(table), probes=LatencyProbes(clock=Clock()))
    assert decision.probe is None and names(decision) == ["slow", "new", "fast"]


def test_slots_of_vanished_backends_are_swept_and_live_slots_are_kept() -> None:
    clock = Clock()
    probes = LatencyProbes(clock=clock, interval=10.0)
    pool = entry([backend(f"b{i}") for i in range(300)]).backends
    assert all(probes.claim(b) for b in pool[:200])
    clock.now += 11  # those slots are free again, and swept once the table is full
    assert all(probes.claim(b) for b in pool[200:])
    assert not any(probes.claim(b) for b in pool[200:])  # the fresh ones hold
    assert probes.claim(pool[0])
    assert len(probes._last) <= 256  # the table stays bounded (a private detail, but the point)
