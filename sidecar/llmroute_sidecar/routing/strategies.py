"""The five orderings of a logical model's candidates. Pure functions over backend lists.

Every function returns a new list holding exactly the backends it was given, reordered; sorts are
stable, so the declared order breaks every tie. ``planner.py`` picks the function from the model's
(or the matched rule's) strategy and feeds it the estimates: ``tokens.py`` for cost, the latency
source the health tracker provides, ``complexity.py``'s tier.

The weighted split uses weighted rendezvous hashing: each arm draws ``-ln(u) / weight`` from a hash
``u`` of (user key, arm name) and the smallest draw wins. An arm wins with probability weight / sum
of weights, a user key always draws the same numbers (in every sidecar, across restarts: the hash
is BLAKE2b, not Python's salted ``hash``), and removing one arm moves only that arm's users. The
arms follow in the order of their draws, so a user whose arm fails also falls over consistently.
Because the draws of a subset of arms rank them exactly as the full set does, ``placement.py`` can
narrow a split to its local arms afterwards and the weights renormalise over them by themselves.

The latency order alone never sends a first request to a backend it has no estimate for;
``probes.py`` adds the bounded probes that measure such backends.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from hashlib import blake2b

from llmroute_proto.v1 import config_pb2 as pb

from ..config.snapshot import BackendEntry
from .tokens import Estimate

__all__ = [
    "LatencyEstimate",
    "arm_count",
    "by_cost",
    "by_latency",
    "by_tier",
    "by_weight",
    "rendezvous_draw",
]

# (backend, streaming) -> seconds (time to first token for streams, total time otherwise), or None
# while the backend has no history. The health tracker provides it.
LatencyEstimate = Callable[[BackendEntry, bool], float | None]

_SCALE = float(2**64)


def rendezvous_draw(key: bytes, arm: str, weight: float) -> float:
    """The arm's draw for ``key``: exponentially distributed with rate ``weight``; lowest wins."""
    digest = blake2b(key + b"\x00" + arm.encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / _SCALE  # uniform in (0, 1)
    return -math.log(u) / weight


def by_weight(
    candidates: Sequence[BackendEntry],
    split: Mapping[str, int],
    key: str | None,
    *,
    rng: random.Random | None = None,
) -> list[BackendEntry]:
    """Split arms first, in the order of the key's draws; then the other candidates, as declared.

    ``split`` maps backend name to weight. When no candidate is an arm (a rule whose backends the
    split does not name), every candidate is an arm of equal weight. ``key=None`` (no user or tenant
    known) draws a random key, so such requests spread by the weights but stick to nothing.
    """
    arms = [(b, split[b.name]) for b in candidates if split.get(b.name, 0) > 0]
    if not arms:
        arms = [(b, 1) for b in candidates]
    if key is None:
        bits = (rng or random).getrandbits(64)
        key = f"random:{bits}"
    raw = key.encode()
    ranked = sorted(arms, key=lambda arm: rendezvous_draw(raw, arm[0].name, arm[1]))
    chosen = {id(b) for b, _ in ranked}
    return [b for b, _ in ranked] + [b for b in candidates if id(b) not in chosen]


def arm_count(candidates: Sequence[BackendEntry], split: Mapping[str, int]) -> int:
    """How many candidates :func:`by_weight` ranks as arms (and so puts first): those of positive
    weight, or all of them when none has one."""
    count = sum(1 for b in candidates if split.get(b.name, 0) > 0)
    return count or len(candidates)


def by_cost(candidates: Sequence[BackendEntry], estimate: Estimate) -> list[BackendEntry]:
    """Cheapest first by the estimated price of this request (unpriced backends count as free)."""
    return sorted(candidates, key=lambda b: b.cost_usd(estimate.input_tokens, estimate.output_tokens))


def by_latency(
    candidates: Sequence[BackendEntry], latency: LatencyEstimate | None, *, stream: bool
) -> list[BackendEntry]:
    """Fastest first by the latency estimate; backends without one follow, in declared order
    (``probes.py`` brings them forward now and then, so they are measured)."""
    if latency is None:
        return list(candidates)

    def key(backend: BackendEntry) -> tuple[int, float]:
        seconds = latency(backend, stream)
        return (1, 0.0) if seconds is None else (0, seconds)

    return sorted(candidates, key=key)


def by_tier(candidates: Sequence[BackendEntry], tier: int) -> list[BackendEntry]:
    """Backends of ``tier`` first, then the neighbouring tiers; at equal distance the larger first
    (a larger model handles an easy prompt; a smaller one may fail a hard one). Backends without a
    tier count as medium."""

    def key(backend: BackendEntry) -> tuple[int, int]:
        own = backend.tier or pb.TIER_MEDIUM
        return (abs(own - tier), -own)

    return sorted(candidates, key=key)
