"""Residency: which regions a route may send data to; and the region label of a decision.

``regions.allowed`` is a hard filter. A backend outside it is never a candidate, not as a fallback
and not when every allowed backend is down; the planner answers 503 rather than send a byte
elsewhere. ``preferLocal``, the soft preference for the sidecar's own region, is one of the
criteria ``placement.py`` sorts the strategy's order by (it narrows a weighted split to its local
arms). Neighbours: ``planner.py`` applies the filter and labels the decision; the sidecar's region
comes from ``RouterConfig.region`` (the node's topology label, pushed by the operator) or the
``--region`` flag.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmroute_proto.v1 import config_pb2 as pb

from ..config.snapshot import BackendEntry

__all__ = ["allowed", "region_choice"]


def allowed(
    candidates: Sequence[BackendEntry], policy: pb.RegionPolicy
) -> tuple[list[BackendEntry], list[BackendEntry]]:
    """(kept, excluded): the backends in the allowed regions, and the others. No list: all kept."""
    regions = policy.allowed
    if not regions:
        return list(candidates), []
    kept: list[BackendEntry] = []
    excluded: list[BackendEntry] = []
    for backend in candidates:
        (kept if backend.region in regions else excluded).append(backend)
    return kept, excluded


def region_choice(first: BackendEntry, region: str) -> str:
    """Metric label for where the first candidate is: local, remote, or unknown (no own region)."""
    if not region:
        return "unknown"
    return "local" if first.region == region else "remote"
