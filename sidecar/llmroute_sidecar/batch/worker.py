"""The batch worker: takes queued lines from the shared stream and runs them like live requests.

Each sidecar with a Redis runs one :class:`BatchWorker`. It keeps at most ``concurrency`` lines in
flight, reading new stream entries through the consumer group and, every half ``claim_idle``,
taking over entries another sidecar has held that long without renewing them (it stopped or was
killed), so no line is lost. While a line runs, its entry is renewed every third of
``claim_idle``, so a slow answer is not taken over and run twice. A line runs through
``run_line`` (the router service, at the batch priority: an interactive request always goes first
at a backend's queue) up to ``max_attempts`` times with doubling backoff on a retryable answer
(429 other than a budget refusal, 408, 5xx); a line that fails for good becomes a dead letter in the
error file with its reason. Attempts are counted in Redis, so a line taken over keeps its count.
A clean stop takes no new lines and gives the running ones ``grace`` seconds to end; what is still
running then stays pending and another sidecar takes it over. With ``provider`` (a shared Redis),
lines first go to :class:`~.provider_batches.ProviderBatches`, which keeps those bound for a
provider's batch API (their entries stay pending, renewed, until sealed into a submission) and
ticks the submissions every ``provider.poll_seconds``; the sweep also ends batches whose completion
window passed (``expiry.py``). Neighbours: ``store.py`` (Redis), ``objects.py`` (line formats),
``runner.py`` (how a line reaches the router service).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .expiry import expire_if_due
from .objects import TERMINAL, InputLine, LineResult, error_line, expired_line, output_line
from .provider_lines import HELD, Offer
from .store import BatchInfo, BatchStore, Claimed, Counts

if TYPE_CHECKING:
    from .provider_batches import ProviderBatches

__all__ = ["BatchWorker", "RunLine", "WorkerListener", "WorkerSettings", "retryable"]

log = logging.getLogger(__name__)

#: Runs one line: (line, its batch, a request id, the attempt number) -> how it ended.
RunLine = Callable[[InputLine, BatchInfo, str, int], Awaitable[LineResult]]
# "completed", "failed", "skipped", "reclaimed", "retried", "expired"; with provider batches also
# "submitted", "fallback" (back to run live) and "adopted" (a submission taken over)
WorkerListener = Callable[[str], None]
_BACKOFF_CAP_S = 30.0
_FINAL_CODES = frozenset({"budget_exceeded", "context_length_exceeded"})


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 4  # lines in flight on this sidecar
    claim_idle_seconds: float = 30.0  # an entry unrenewed this long is taken over
    max_attempts: int = 3
    backoff_seconds: float = 1.0  # before the second attempt; doubled after each
    poll_ms: int = 1000  # how long one read waits for new lines
    sweep_seconds: float = 5.0  # how often unfinished batches are checked for their end
    retention_seconds: float = 30 * 86400  # an ended batch and its output files are kept this long
    window_seconds: float | None = None  # tests: every batch's completion window instead of its 24h
    provider_poll_seconds: float = 30.0  # how often provider batches are looked at
    provider_flush_seconds: float = 5.0  # a line waits at most this long for its provider batch to fill
    provider_max_lines: int = 10_000  # lines per provider batch


def retryable(result: LineResult) -> bool:
    """Worth another attempt: overload, rate limits and upstream faults; not a bad request, a
    budget refusal or an oversized prompt, which would fail the same way again."""
    error = result.body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if code in _FINAL_CODES:
        return False
    return result.status in (408, 429) or result.status >= 500


class BatchWorker:
    def __init__(
        self,
        store: BatchStore,
        run_line: RunLine,
        *,
        consumer: str,
        settings: WorkerSettings | None = None,
        listener: WorkerListener | None = None,
        provider: ProviderBatches | None = None,
    ) -> None:
        self.store = store
        self.run_line = run_line
        self.provider = provider
        self.consumer = consumer
        self.settings = settings or WorkerSettings()
        self._listener = listener or (lambda _event: None)
        self._running: dict[asyncio.Task[None], Claimed] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.store.ensure_group()
        self._tasks = [asyncio.create_task(self._intake()), asyncio.create_task(self._renewals())]
        if self.provider is not None:
            self._tasks.append(asyncio.create_task(self._provider_loop()))

    async def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.provider is not None:  # groups not sealed stay pending; submissions go to others
            await self.provider.stop()
        running = list(self._running)
        if running:
            log.info("batch worker stopping: %d lines running get %.0f s to end", len(running), grace)
            _done, late = await asyncio.wait(running, timeout=grace)
            for task in late:  # still pending in the stream: another sidecar takes them over
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)

    # -- intake ---------------------------------------------------------------------------------

    async def _intake(self) -> None:
        s = self.settings
        next_reclaim = next_sweep = 0.0
        while not self._stopping.is_set():
            free = s.concurrency - len(self._running)
            if free <= 0:
                await asyncio.wait(list(self._running), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                claimed: list[Claimed] = []
                clock = time.monotonic()
                if clock >= next_reclaim:
                    next_reclaim = clock + s.claim_idle_seconds / 2
                    claimed = await self.store.reclaim(self.consumer, int(s.claim_idle_seconds * 1000), free)
                    for _ in claimed:
                        self._listener("reclaimed")
                if clock >= next_sweep:
                    next_sweep = clock + s.sweep_seconds
                    await self._sweep()
                if not claimed:
                    claimed = await self.store.read(self.consumer, free, s.poll_ms)
                    if not claimed and self.provider is not None:
                        await self.provider.flush()  # nothing more waiting: send what was gathered
            except Exception as exc:  # Redis down or slow: the lines wait there, try again soon
                log.warning("batch worker: cannot read lines from Redis: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for item in claimed:
                task = asyncio.create_task(self._line(item))
                self._running[task] = item
                task.add_done_callback(self._running.pop)

    async def _provider_loop(self) -> None:
        """Provider batches on their own clock, so that slow live lines filling every slot of the
        intake never hold up a submission or a poll."""
        assert self.provider is not None
        s = self.settings
        next_poll = 0.0
        while True:
            try:
                await self.provider.flush(due_only=True)
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + s.provider_poll_seconds
                    await self.provider.tick()
            except Exception as exc:  # Redis down or slow: try again on the next round
                log.warning("batch worker: provider batches not driven this round: %s", exc)
            await asyncio.sleep(min(s.provider_poll_seconds, s.provider_flush_seconds, 1.0))

    async def _renewals(self) -> None:
        period = self.settings.claim_idle_seconds / 3
        while True:
            await asyncio.sleep(period)
            ids = [item.entry_id for item in self._running.values()]
            if self.provider is not None:
                ids += self.provider.held_entries()
            try:
                await self.store.renew(self.consumer, ids)
                if self.provider is not None:
                    await self.provider.renew()
            except Exception as exc:
                log.warning("batch worker: cannot renew %d running lines: %s", len(ids), exc)

    async def _sweep(self) -> None:
        """End batches whose lines have all ended but whose end was not written (the sidecar that
        recorded the last line died first, or a cancel left nothing to run)."""
        for batch_id in await self.store.active():
            expired = await expire_if_due(self.store, batch_id)
            for _ in range(expired):
                self._listener("expired")
            await self.store.finalize(batch_id)

    # -- one line -------------------------------------------------------------------------------

    async def _line(self, item: Claimed) -> None:
        store = self.store
        try:
            info = await store.info(item.batch_id)
            if (
                info is None
                or await store.ended(item.batch_id, item.index)
                or (self.provider is not None and await self.provider.assigned(item))
            ):  # gone, ended, or in a provider batch whose poller resolves it
                await store.ack(item.entry_id)
                return
            line = await store.line(item.batch_id, item.index)
            if line is None:  # the batch ended meanwhile
                await store.ack(item.entry_id)
                return
            if info.status == "expiring":
                counts = await store.record(item.batch_id, item.index, "err", expired_line(line))
                self._listener("expired")
            elif info.status in TERMINAL or info.status == "cancelling":
                counts = await store.record(item.batch_id, item.index, "skip")
                self._listener("skipped")
            else:
                ran = await self._run(item, line, info)
                if ran is None:  # waits for its provider batch; acknowledged when that is sealed
                    return
                counts = ran
            await store.ack(item.entry_id)
            if counts.ended:
                await store.finalize(item.batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis went away mid-line: the entry stays pending and is taken over
            log.exception("batch %s line %d: not recorded; it will be taken over", item.batch_id, item.index)

    async def _run(self, item: Claimed, line: InputLine, info: BatchInfo) -> Counts | None:
        """Run the line to its end (None: it waits for a provider batch instead)."""
        s = self.settings
        result: LineResult | None = None
        reason = "retries_exhausted"
        offer = self.provider is not None
        while True:
            offered = None
            if offer and self.provider is not None:  # the first try may go to a provider batch
                offer = False
                offered = await self._offer(item, line, info)
                if offered == HELD:
                    return None
            attempt = await self.store.next_attempt(item.batch_id, item.index)
            if isinstance(offered, LineResult):  # it ran (live, from the cache) or was refused
                result = dataclasses.replace(offered, attempts=attempt)
            elif attempt > s.max_attempts:  # the last attempts ran on sidecars that stopped mid-line
                break
            else:
                request_id = f"{item.batch_id}-{item.index}-{attempt}"
                result = await self._attempt(line, info, request_id, attempt)
            if result.ok:
                self._listener("completed")
                return await self.store.record(
                    item.batch_id,
                    item.index,
                    "out",
                    output_line(line, result),
                    input_tokens=result.input_tokens,
                    output_tokens=result.output_tokens,
                    cost_micro_usd=result.cost_micro_usd,
                )
            if not retryable(result):
                reason = "not_retryable"
                break
            if attempt >= s.max_attempts:
                break
            self._listener("retried")
            await asyncio.sleep(min(_BACKOFF_CAP_S, s.backoff_seconds * 2 ** (attempt - 1)))
        if result is None:
            message = f"the line's {s.max_attempts} attempts ran on sidecars that stopped before it ended"
            result = LineResult(
                500, {"error": {"message": message, "code": "attempts_lost"}}, "", s.max_attempts
            )
        self._listener("failed")
        return await self.store.record(
            item.batch_id,
            item.index,
            "err",
            error_line(line, result, reason),
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_micro_usd=result.cost_micro_usd,
        )

    async def _offer(self, item: Claimed, line: InputLine, info: BatchInfo) -> Offer:
        assert self.provider is not None
        try:
            return await self.provider.offer(item, line, info)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("batch %s line %d: the provider batch path failed", item.batch_id, item.index)
            message = f"internal error: {type(exc).__name__}"
            return LineResult(500, {"error": {"message": message, "code": "internal_error"}}, "", 1)

    async def _attempt(self, line: InputLine, info: BatchInfo, request_id: str, attempt: int) -> LineResult:
        try:
            return await self.run_line(line, info, request_id, attempt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("batch %s line %d: the router failed", request_id, line.index)
            message = f"internal error: {type(exc).__name__}"
            return LineResult(
                500, {"error": {"message": message, "code": "internal_error"}}, request_id, attempt
            )
