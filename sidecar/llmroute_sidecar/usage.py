"""Usage records: one per answered request, kept in a bounded buffer until reported.

The operator connection (``usage_reporter.py``) drains this buffer as sequence-numbered batches; a
standalone sidecar keeps only a short recent window (its metrics and audit log carry the rest). Bounded, so a long operator outage costs memory only up to the
bound; the count of records dropped at the bound is exported, never silent.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["UsageBuffer", "UsageRecord"]


@dataclass(slots=True)
class UsageRecord:
    """One request's usage, as reported to the operator. Built once per request and never changed
    after (not ``frozen``: a frozen dataclass sets each of these 29 fields through
    ``object.__setattr__``, twice the cost of a plain one, on every request)."""

    request_id: str
    route: str
    model: str
    backend: str
    provider: str
    tenant: str
    user: str
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int
    outcome: str  # ok, stream_error, error, client_disconnected, rate_limited, budget_exceeded, blocked, feedback, ...
    latency_seconds: float
    started_at: float = field(default_factory=time.time)
    region: str = ""
    cached_tokens: int = 0
    estimated: bool = False  # the provider sent no usage: tokens are the sidecar's own count
    cache: str = ""  # hit, semantic, miss, bypass, or "" when caching is off
    attempts: int = 0
    http_status: int = 200
    config_version: str = ""
    budgets: tuple[str, ...] = ()  # every budget the request was charged to
    provider_model: str = ""  # the backend's model id at the provider
    experiment_arm: str = ""  # the split arm of the route's experiment the user was assigned
    ttft_seconds: float | None = None  # streams: receipt to the first chunk sent
    response_id: str = ""  # the provider's completion id; for feedback, the response rated
    feedback_score: float = 0.0  # outcome "feedback" only
    feedback_label: str = ""  # outcome "feedback" only
    abuse: tuple[bool, str, float, str] | None = (
        None  # outcome "abuse_blocked": (by tenant, reason, seconds, window)
    )
    batch_api: str = ""  # the provider whose own batch API ran this batch line (batch/); "" = live
    batch_discount_percent: float = 0.0  # with batch_api: percent off the prices (already in the cost)


class UsageBuffer:
    def __init__(self, capacity: int = 100_000) -> None:
        self._records: deque[UsageRecord] = deque()
        self.capacity = capacity
        self.dropped = 0
        self.sequence = 0

    def add(self, record: UsageRecord) -> None:
        if len(self._records) >= self.capacity:
            self._records.popleft()
            self.dropped += 1
        self._records.append(record)
        self.sequence += 1

    def __len__(self) -> int:
        return len(self._records)

    def drain(self, limit: int = 1000) -> list[UsageRecord]:
        out: list[UsageRecord] = []
        while self._records and len(out) < limit:
            out.append(self._records.popleft())
        return out
