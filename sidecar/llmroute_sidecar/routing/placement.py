"""Locality and health on top of the strategy's order: which group of candidates gets traffic first.

The strategy (``strategies.py``) orders the candidates; :func:`place` then sorts them, stably, into
groups, so the strategy's order holds within each group:

1. healthy before unavailable (the health tracker's answer; unavailable backends stay as a last
   resort, and when every candidate is unavailable this criterion changes nothing);
2. the strategy's leading backends before the rest: for the weighted strategy the split's arms
   (positive weight) before the backends outside the split, which are fallbacks only; for the
   other strategies every candidate leads;
3. with ``preferLocal`` and a known own region, backends in that region before the others.

So ``preferLocal`` *narrows* the choice rather than reorder a finished one: while a healthy local
candidate exists, the strategy chooses among the local ones. A weighted split renormalises its
weights over its local arms (rendezvous hashing is consistent on subsets: a user's first local arm
is the arm that user draws when only local arms exist), remote arms only get traffic when no local
arm is healthy, by their weights, and a backend outside the split never goes before an arm, local
or not. Nothing here drops a backend; residency (``regions.allowed``) did that before.
Neighbours: ``planner.py`` calls :func:`place` after the strategy; :func:`leading` sizes the
first group, to which ``probes.py`` limits the latency probes.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config.snapshot import BackendEntry

__all__ = ["leading", "place"]

Available = Callable[[BackendEntry], bool]


def place(
    ordered: list[BackendEntry],
    *,
    lead: int,
    region: str,
    prefer_local: bool,
    available: Available | None,
) -> tuple[list[BackendEntry], tuple[str, ...]]:
    """``ordered`` sorted stably by (unavailable, outside the first ``lead``, remote), and the names
    of the unavailable backends moved to the end (none when all or none are unavailable).

    ``region`` is the sidecar's own region; locality applies only with ``prefer_local`` and a region.
    Two stable partitions rather than a keyed sort: this runs on every request, and the common
    cases (one region, everything healthy) then cost a scan and no new list.
    """
    if prefer_local and region:
        if lead < len(ordered):  # the split's arms and its fallbacks, each local first
            ordered = _local_first(ordered[:lead], region) + _local_first(ordered[lead:], region)
        else:
            ordered = _local_first(ordered, region)
    if available is None:
        return ordered, ()
    up: list[BackendEntry] = []
    down: list[BackendEntry] = []
    for backend in ordered:
        (up if available(backend) else down).append(backend)
    if not up or not down:
        return ordered, ()
    return up + down, tuple(b.name for b in down)


def leading(
    ordered: list[BackendEntry], *, region: str, prefer_local: bool, available: Available | None
) -> int:
    """How many of :func:`place`'s output form its first group: as healthy as the first backend and,
    with ``prefer_local``, as local. For strategies without a split (every candidate leads)."""
    head = ordered[0]
    local = region if prefer_local else ""
    head_up = available is None or available(head)
    head_local = bool(local) and head.region == local
    count = 1
    for backend in ordered[1:]:
        if local and (backend.region == local) != head_local:
            break
        if available is not None and available(backend) != head_up:
            break
        count += 1
    return count


def _local_first(candidates: list[BackendEntry], region: str) -> list[BackendEntry]:
    """Backends in ``region`` first, the others after, each group in its given order."""
    local = [b for b in candidates if b.region == region]
    if not local or len(local) == len(candidates):
        return candidates
    return local + [b for b in candidates if b.region != region]
