"""When a key's traffic is abuse: pure logic over window counts.

A key (a user or a tenant) is counted per fixed window (``window_seconds``): requests, tokens, cost
and policy refusals. Its baseline is its average per window over the previous baseline period. A
window is a spike when one of its requests, tokens or cost is at least its floor (``min_*``: below
it nothing is a spike, which is also what a new key with no baseline is held to) and above
``spike_factor`` times the baseline; ``max_policy_blocks`` refusals in one window are abuse too.
Neighbours: ``counters.py`` keeps the counts, ``guard.py`` acts on the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..route_policy import AbuseSpec

__all__ = ["FIELDS", "Counts", "verdict"]

FIELDS = ("requests", "tokens", "cost", "blocks")


@dataclass(frozen=True)
class Counts:
    """One period's counts (a window's, or a baseline period's)."""

    requests: int = 0
    tokens: int = 0
    cost: int = 0  # micro-USD
    blocks: int = 0

    @classmethod
    def of(cls, values: dict[str, int]) -> Counts:
        return cls(*(int(values.get(name, 0)) for name in FIELDS))


def verdict(spec: AbuseSpec, window: Counts, previous: Counts) -> str | None:
    """Why ``window`` is abuse given the ``previous`` baseline period's counts, or None."""
    if window.blocks >= spec.max_policy_blocks:
        return "policy_blocks"
    windows = max(1.0, spec.baseline_seconds / spec.window_seconds)
    for name, value, baseline, floor in (
        ("request_rate", window.requests, previous.requests, spec.min_requests),
        ("token_rate", window.tokens, previous.tokens, spec.min_tokens),
        ("cost_rate", window.cost, previous.cost, spec.min_cost_micro_usd),
    ):
        if value >= floor and value > spec.spike_factor * baseline / windows:
            return name
    return None
