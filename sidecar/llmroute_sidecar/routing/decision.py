"""The result of planning one request: ordered candidates, the body to send, and why.

:class:`Decision` is what ``planner.py`` returns and what the fronts read: the attempt loop takes
``candidates`` and ``body``; the response carries ``x-llmroute-truncated`` when messages were
dropped and, for requests with ``x-llmroute-debug: 1``, ``x-llmroute-decision`` with the compact
JSON trace from :meth:`Decision.trace`. Metrics and logs read the same fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..config.snapshot import BackendEntry
from .complexity import Complexity
from .tokens import Estimate

__all__ = ["DECISION_HEADER", "TRUNCATED_HEADER", "Decision", "Excluded"]

TRUNCATED_HEADER = "x-llmroute-truncated"
DECISION_HEADER = "x-llmroute-decision"


@dataclass(frozen=True, slots=True)
class Excluded:
    """A backend left out of the candidates, and why.

    Reasons: ``capability`` (cannot serve this kind of request), ``residency`` (outside
    ``regions.allowed``), ``context`` (window too small for this request), ``min_context`` (window
    below the model's ``minContextWindow``).
    """

    backend: str
    reason: str


@dataclass(slots=True)
class Decision:
    """How one request is routed. Treated as immutable (``dataclasses.replace`` makes a changed
    copy); not ``frozen`` only because a frozen dataclass's ``__init__``, run once per request, costs
    twice as much per field."""

    model: str
    candidates: tuple[BackendEntry, ...]
    body: dict[str, Any]
    strategy: str
    estimate: Estimate
    rule: str | None = None
    rule_index: int | None = None
    complexity: Complexity | None = None
    tier: str | None = None
    region: str = ""
    region_choice: str = "unknown"
    prefer_local: bool = False
    allowed_regions: tuple[str, ...] = ()
    excluded: tuple[Excluded, ...] = ()
    demoted: tuple[str, ...] = ()
    probe: str | None = None  # the unmeasured backend put first to measure its latency (probes.py)
    truncated: int = 0

    @property
    def rule_label(self) -> str:
        """The rule for metric labels: its name, ``rules[i]``, or ``none``."""
        return self.rule or "none"

    def excluded_for(self, reason: str) -> list[str]:
        return [e.backend for e in self.excluded if e.reason == reason]

    def residency_note(self) -> str:
        """For failure messages: which backends the residency rule kept out ("" when none)."""
        outside = self.excluded_for("residency")
        if not outside:
            return ""
        return (
            f" (the residency rule regions.allowed [{', '.join(self.allowed_regions)}] excluded "
            f"{', '.join(outside)}; nothing was sent to other regions)"
        )

    def trace(self) -> dict[str, Any]:
        """The decision as a small JSON-ready dict (the x-llmroute-decision header and debug logs)."""
        out: dict[str, Any] = {
            "model": self.model,
            "strategy": self.strategy,
            "rule": self.rule,
            "candidates": [b.name for b in self.candidates],
            "tokens": {"input": self.estimate.input_tokens, "output": self.estimate.output_tokens},
        }
        if self.complexity is not None:
            out["complexity"] = {
                "score": self.complexity.score,
                "top": {name: round(value, 3) for name, value in self.complexity.top(3)},
            }
        if self.tier is not None:
            out["tier"] = self.tier
        region: dict[str, Any] = {"own": self.region, "choice": self.region_choice}
        if self.prefer_local:
            region["preferLocal"] = True
        if self.allowed_regions:
            region["allowed"] = list(self.allowed_regions)
        out["region"] = region
        if self.excluded:
            out["excluded"] = {e.backend: e.reason for e in self.excluded}
        if self.demoted:
            out["unhealthy"] = list(self.demoted)
        if self.probe is not None:
            out["probe"] = self.probe
        if self.truncated:
            out["truncated"] = self.truncated
        return out

    def trace_json(self) -> str:
        """Compact, ASCII-only JSON of :meth:`trace` (safe as a header value)."""
        return json.dumps(self.trace(), separators=(",", ":"), ensure_ascii=True)

    def explain(self) -> str:
        """One line for logs: strategy, rule, score, order and exclusions."""
        parts = [f"strategy={self.strategy}", f"rule={self.rule_label}"]
        if self.complexity is not None:
            parts.append(f"complexity={self.complexity.explain()}")
        if self.tier is not None:
            parts.append(f"tier={self.tier}")
        parts.append("order=" + ",".join(b.name for b in self.candidates))
        if self.excluded:
            parts.append("excluded=" + ",".join(f"{e.backend}:{e.reason}" for e in self.excluded))
        if self.demoted:
            parts.append("unhealthy=" + ",".join(self.demoted))
        if self.probe is not None:
            parts.append(f"probe={self.probe}")
        if self.truncated:
            parts.append(f"truncated={self.truncated}")
        return " ".join(parts)

    def response_headers(self, *, debug: bool = False) -> dict[str, str]:
        """The routing headers this decision adds to the response."""
        headers: dict[str, str] = {}
        if self.truncated:
            headers[TRUNCATED_HEADER] = str(self.truncated)
        if debug:
            headers[DECISION_HEADER] = self.trace_json()
        return headers
