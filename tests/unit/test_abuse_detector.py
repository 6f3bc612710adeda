"""Abuse protection's verdict (``abuse/detector.py``) and its in-process counters (``abuse/counters.py``
without Redis), on a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmroute_sidecar.abuse.counters import AbuseCounters
from llmroute_sidecar.abuse.detector import Counts, verdict
from llmroute_sidecar.route_policy import AbuseSpec

SPEC = AbuseSpec(
    window_seconds=60, baseline_seconds=3600, spike_factor=5, min_requests=20, min_tokens=1000,
    min_cost_micro_usd=1_000_000, max_policy_blocks=3, block_seconds=600,
)  # fmt: skip


def test_a_new_key_is_held_to_the_floors() -> None:
    none = Counts()
    assert verdict(SPEC, Counts(requests=19), none) is None
    assert verdict(SPEC, Counts(requests=20), none) == "request_rate"
    assert verdict(SPEC, Counts(tokens=1000), none) == "token_rate"
    assert verdict(SPEC, Counts(cost=1_000_000), none) == "cost_rate"
    assert verdict(SPEC, Counts(blocks=3), none) == "policy_blocks"


def test_a_busy_key_is_judged_against_its_own_baseline() -> None:
    busy = Counts(requests=60 * 100)  # 100 per window over the last hour
    assert verdict(SPEC, Counts(requests=400), busy) is None  # 4x its usual: not a spike
    assert verdict(SPEC, Counts(requests=501), busy) == "request_rate"  # above 5x


@given(window=st.builds(Counts, *(st.integers(0, 10**7) for _ in range(4))),
       previous=st.builds(Counts, *(st.integers(0, 10**9) for _ in range(4))))  # fmt: skip
def test_below_every_floor_nothing_is_abuse(window: Counts, previous: Counts) -> None:
    reason = verdict(SPEC, window, previous)
    below = window.requests < 20 and window.tokens < 1000 and window.cost < 1_000_000 and window.blocks < 3
    assert (reason is None) if below else True
    if reason == "request_rate":
        assert window.requests > 5 * previous.requests / 60


async def test_local_counts_roll_with_the_window_and_blocks_lift() -> None:
    now = [1000.0 * 3600]
    counters = AbuseCounters(None, clock=lambda: now[0])
    for _ in range(5):
        seen = await counters.count("ns/route", "u", SPEC, {"requests": 1})
    assert seen.window.requests == 5 and seen.block is None
    assert await counters.block("ns/route", "u", "request_rate", 600)
    assert not await counters.block("ns/route", "u", "token_rate", 600)  # already blocked
    now[0] += 61
    seen = await counters.count("ns/route", "u", SPEC, {"requests": 1})
    assert seen.window.requests == 1 and seen.block is not None and seen.block.reason == "request_rate"
    now[0] += 3600
    seen = await counters.count("ns/route", "u", SPEC, {})
    assert seen.block is None and seen.previous.requests == 6  # last hour's counts are the baseline
