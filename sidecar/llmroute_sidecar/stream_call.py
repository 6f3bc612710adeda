"""One streamed chat completion between the service and a front: its chunks, then its accounting.

``RouterService.chat_stream`` returns a :class:`StreamCall`, either over an upstream stream that
``attempts.open_stream`` opened (its first chunks already read) or over a cached answer replayed as
chunks. The HTTP front (SSE) and the gRPC front iterate :meth:`chunks` and then call :meth:`finish`
exactly once with how the stream ended, whatever happened, so usage is never dropped:

- PII placeholders are restored across chunk boundaries when the route asks (``pii.ChunkRestorer``);
- what was relayed is counted, so a provider that sends no usage still yields a record, marked
  estimated;
- a stream that completed is assembled and cached (on a cache miss);
- the budget reservation is settled with the cost of the provider's usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .accounting import RelayCount, Usage, usage_of
from .cache import assemble_response

if TYPE_CHECKING:
    from .attempts import StreamOutcome
    from .config.snapshot import BackendEntry
    from .request_policies import Request
    from .service import RouterService

__all__ = ["StreamCall"]

Json = dict[str, Any]
_STATUS = {"ok": 200, "stream_error": 502, "client_disconnected": 499, "error": 500}


class StreamCall:
    def __init__(
        self,
        service: RouterService,
        request: Request,
        *,
        outcome: StreamOutcome | None = None,
        replay: list[Json] | None = None,
        cached: Json | None = None,
    ) -> None:
        self.service = service
        self.request = request
        self.outcome = outcome
        self._replay = replay
        self._cached = cached
        self._relay = RelayCount()
        # Chunks are kept when the whole answer is needed at the end: for the cache, and for memory.
        keep = request.cache == "miss" or request.memory is not None
        self._collected: list[Json] | None = [] if outcome is not None and keep else None
        self.completed = False
        self.cost_usd: float | None = None
        self._finished = False

    @property
    def backend(self) -> BackendEntry | None:
        return self.outcome.backend if self.outcome is not None else None

    @property
    def attempts(self) -> int:
        return self.outcome.trace.attempts if self.outcome is not None else 0

    def headers(self) -> dict[str, str]:
        """The x-llmroute-* headers; the cost is unknown until the end (a final SSE comment says it)."""
        return self.service._meta(self.request, self.backend, self.attempts, None).headers()

    @property
    def usage(self) -> Json | None:
        """Usage as OpenAI reports it, once known."""
        if self.outcome is not None:
            return self.outcome.decoder.usage
        return self._cached.get("usage") if self._cached is not None else None

    async def _source(self) -> AsyncIterator[Json]:
        if self._replay is not None:
            for chunk in self._replay:
                yield chunk
            return
        assert self.outcome is not None
        for chunk in self.outcome.first:
            yield chunk
        async for chunk in self.outcome.rest():
            yield chunk

    async def chunks(self) -> AsyncIterator[Json]:
        """The chunks to send; raises ``attempts.StreamBroken`` when the upstream breaks."""
        request = self.request
        redaction = request.redaction
        restorer = (
            redaction.stream_restorer() if redaction is not None and request.policies.pii_restore else None
        )
        async for chunk in self._source():
            self._relay.feed(chunk)
            if not request.response_id and isinstance(answer_id := chunk.get("id"), str):
                request.response_id = answer_id  # feedback names the answer by it (experiment/)
            if self._collected is not None:
                self._collected.append(chunk)
            if restorer is not None:
                if not chunk.get("choices"):  # the usage-only chunk ends the stream: release first
                    for held in restorer.flush():
                        yield held
                chunk = restorer.feed(chunk)
            yield chunk
        if restorer is not None:
            for held in restorer.flush():
                yield held
        self.completed = True

    async def finish(self, label: str) -> float | None:
        """Account the stream once: ``label`` is ok, stream_error, client_disconnected or error."""
        if self._finished:
            return self.cost_usd
        self._finished = True
        request, policies = self.request, self.service.policies
        outcome = self.outcome
        if outcome is None:  # a cache hit
            usage = usage_of(self.usage) or Usage()
            await policies.finish(
                request, None, usage, outcome=label, status=_STATUS.get(label, 500), attempts=0
            )
            if label == "ok" and self._cached is not None:
                await self.service.memory.record(request, self._cached)
            self.cost_usd = 0.0
            return self.cost_usd
        reported = usage_of(outcome.decoder.usage)
        estimate = request.decision.estimate.input_tokens if request.decision is not None else 0
        relayed = self._relay.tokens()
        if reported is None:
            # The provider reported nothing (or the stream was cut first): count what was relayed.
            reported = Usage(estimate, relayed, 0, estimated=True)
        elif not self.completed and relayed > reported.output_tokens:
            # A cut stream's last usage may be a provisional one (Anthropic's message_start says
            # output_tokens: 1): never charge less than what reached the app.
            reported = Usage(
                reported.input_tokens or estimate, relayed, reported.cached_tokens, estimated=True
            )
        if label == "ok" and self.completed and self._collected:
            assembled = assemble_response(self._collected)
            if assembled is not None:
                await policies.remember(request, assembled)
                await self.service.memory.record(request, assembled)
        cost = await policies.finish(
            request,
            outcome.backend,
            reported,
            outcome=label,
            status=_STATUS.get(label, 500),
            attempts=outcome.trace.attempts,
            reservation=outcome.trace.reservation,
        )
        self.cost_usd = (cost + request.hedge_cost) / 1e6  # a lost hedge was billed too
        return self.cost_usd

    def close(self) -> None:
        if self.outcome is not None:
            self.outcome.close()
