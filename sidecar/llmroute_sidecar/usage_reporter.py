"""Usage reporting, sidecar side: the :class:`UsageBuffer` drained into sequence-numbered batches.

Delivery is at-least-once. A batch keeps its sequence number and records until the operator
acknowledges it (``UsageAck.acked_sequence``: that batch and every one before it); after a reconnect
every unacknowledged batch is sent again, in order. Batches are only formed from the buffer while at
most ``max_unacked`` are outstanding, so during an operator outage records wait in the bounded
:class:`UsageBuffer` (which counts what it drops) and the sequence never has gaps the operator would
wait for. Used by ``operator_client.py``; no Kubernetes code here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from llmroute_proto.v1 import config_pb2 as cpb
from llmroute_proto.v1 import usage_pb2 as upb

from .usage import UsageBuffer, UsageRecord

__all__ = ["UsageReporter", "to_proto"]

log = logging.getLogger(__name__)

_PROVIDERS = {
    "openai": cpb.PROVIDER_OPENAI,
    "azure-openai": cpb.PROVIDER_AZURE_OPENAI,
    "anthropic": cpb.PROVIDER_ANTHROPIC,
    "google": cpb.PROVIDER_GOOGLE,
    "bedrock": cpb.PROVIDER_BEDROCK,
    "cohere": cpb.PROVIDER_COHERE,
    "openai-compatible": cpb.PROVIDER_OPENAI_COMPATIBLE,
}
_OUTCOMES = {
    "ok": upb.USAGE_OUTCOME_SUCCESS,
    "stream_error": upb.USAGE_OUTCOME_UPSTREAM_ERROR,
    "error": upb.USAGE_OUTCOME_UPSTREAM_ERROR,
    "client_disconnected": upb.USAGE_OUTCOME_CANCELLED,
    "timeout": upb.USAGE_OUTCOME_TIMEOUT,
    "rate_limited": upb.USAGE_OUTCOME_RATE_LIMITED,
    "budget_exceeded": upb.USAGE_OUTCOME_BUDGET_EXHAUSTED,
    "blocked": upb.USAGE_OUTCOME_BLOCKED,
    "invalid": upb.USAGE_OUTCOME_INVALID_REQUEST,
    "feedback": upb.USAGE_OUTCOME_FEEDBACK,
    "hedge_lost": upb.USAGE_OUTCOME_CANCELLED,
    "abuse_blocked": upb.USAGE_OUTCOME_ABUSE_BLOCK,
}
_CACHE = {
    "hit": cpb.CACHE_STATUS_HIT,
    "semantic": cpb.CACHE_STATUS_SEMANTIC_HIT,
    "miss": cpb.CACHE_STATUS_MISS,
    "bypass": cpb.CACHE_STATUS_BYPASS,
}


def to_proto(record: UsageRecord) -> upb.UsageRecord:
    """The wire form of one record. Routes travel by name (the namespace is the caller's)."""
    started = Timestamp()
    started.FromNanoseconds(int(record.started_at * 1e9))
    latency = Duration()
    latency.FromNanoseconds(int(record.latency_seconds * 1e9))
    out = upb.UsageRecord(
        request_id=record.request_id,
        route=record.route.rpartition("/")[2],
        logical_model=record.model,
        backend=record.backend,
        provider=_PROVIDERS.get(record.provider, cpb.PROVIDER_UNSPECIFIED),
        tenant=record.tenant,
        input_tokens=max(0, record.input_tokens),
        output_tokens=max(0, record.output_tokens),
        cost_micro_usd=record.cost_micro_usd,
        outcome=_OUTCOMES.get(record.outcome, upb.USAGE_OUTCOME_UNSPECIFIED),
        started_at=started,
        latency=latency,
        region=record.region,
        cached_tokens=max(0, record.cached_tokens),
        estimated=record.estimated,
        cache=_CACHE.get(record.cache, cpb.CACHE_STATUS_UNSPECIFIED),
        attempts=record.attempts,
        http_status=record.http_status,
        config_version=record.config_version,
        budgets=list(record.budgets),
        model=record.provider_model,
    )
    if record.user:
        out.user_raw = record.user
    if record.experiment_arm:
        out.experiment_arm = record.experiment_arm
        out.response_id = record.response_id
        out.feedback_score = record.feedback_score
        out.feedback_label = record.feedback_label
    if record.abuse is not None:
        by_tenant, reason, seconds, window = record.abuse
        out.abuse_block.by_tenant, out.abuse_block.reason, out.abuse_block.window = by_tenant, reason, window
        out.abuse_block.block_for.FromNanoseconds(int(seconds * 1e9))
    if record.ttft_seconds is not None:
        out.time_to_first_token.FromNanoseconds(int(record.ttft_seconds * 1e9))
    if record.batch_api:
        out.batch_api, out.batch_discount_percent = record.batch_api, record.batch_discount_percent
    return out


class UsageReporter:
    """Batches, sequence numbers and acknowledgements for one sidecar instance."""

    def __init__(
        self,
        *,
        buffer: UsageBuffer,
        sidecar_id: str,
        batch_records: int = 500,
        max_unacked: int = 64,
        interval: float = 0.5,
    ) -> None:
        self.buffer = buffer
        self.sidecar_id = sidecar_id
        self.batch_records = batch_records
        self.max_unacked = max_unacked
        self.interval = interval
        self.unacked: deque[upb.UsageBatch] = deque()
        self.next_sequence = 1
        self.acked_sequence = 0
        self.batches_sent = 0
        self.batches_resent = 0
        self.records_acked = 0
        self._wake = asyncio.Event()

    @property
    def unacked_records(self) -> int:
        return sum(len(b.records) for b in self.unacked)

    def form_batches(self) -> list[upb.UsageBatch]:
        """Move records from the buffer into new batches, while the unacked window allows."""
        formed: list[upb.UsageBatch] = []
        while len(self.unacked) < self.max_unacked and len(self.buffer):
            records = [to_proto(r) for r in self.buffer.drain(self.batch_records)]
            batch = upb.UsageBatch(sidecar_id=self.sidecar_id, sequence=self.next_sequence, records=records)
            self.next_sequence += 1
            self.unacked.append(batch)
            formed.append(batch)
        return formed

    def ack(self, sequence: int) -> None:
        """Drop every batch up to ``sequence``."""
        self.acked_sequence = max(self.acked_sequence, sequence)
        while self.unacked and self.unacked[0].sequence <= sequence:
            self.records_acked += len(self.unacked.popleft().records)
        self._wake.set()  # room in the window: form more

    def flush_soon(self) -> None:
        self._wake.set()

    async def pump(self, call: Any) -> None:
        """Write one stream's batches: every unacknowledged batch again, then new ones as they form."""
        sent = 0
        for batch in list(self.unacked):
            self.batches_resent += 1
            sent = batch.sequence
            await call.write(batch)
        while True:
            # Includes batches formed while a previous stream was dying and never sent on this one.
            self.form_batches()
            for batch in [b for b in self.unacked if b.sequence > sent]:
                sent = batch.sequence
                self.batches_sent += 1
                await call.write(batch)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
