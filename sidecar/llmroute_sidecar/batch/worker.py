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
running then stays pending and another sidecar takes it over. Neighbours: ``store.py`` (Redis),
``objects.py`` (line formats), ``runner.py`` (how a line reaches the router service).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .objects import TERMINAL, InputLine, LineResult, error_line, output_line
from .store import BatchInfo, BatchStore, Claimed, Counts

__all__ = ["BatchWorker", "RunLine", "WorkerListener", "WorkerSettings", "retryable"]

log = logging.getLogger(__name__)

#: Runs one line: (line, its batch, a request id, the attempt number) -> how it ended.
RunLine = Callable[[InputLine, BatchInfo, str, int], Awaitable[LineResult]]
WorkerListener = Callable[[str], None]  # "completed", "failed", "skipped", "reclaimed", "retried"
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
    ) -> None:
        self.store = store
        self.run_line = run_line
        self.consumer = consumer
        self.settings = settings or WorkerSettings()
        self._listener = listener or (lambda _event: None)
        self._running: dict[asyncio.Task[None], Claimed] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.store.ensure_group()
        self._tasks = [asyncio.create_task(self._intake()), asyncio.create_task(self._renewals())]

    async def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
            except Exception as exc:  # Redis down or slow: the lines wait there, try again soon
                log.warning("batch worker: cannot read lines from Redis: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for item in claimed:
                task = asyncio.create_task(self._line(item))
                self._running[task] = item
                task.add_done_callback(self._running.pop)

    async def _renewals(self) -> None:
        period = self.settings.claim_idle_seconds / 3
        while True:
            await asyncio.sleep(period)
            ids = [item.entry_id for item in self._running.values()]
            try:
                await self.store.renew(self.consumer, ids)
            except Exception as exc:
                log.warning("batch worker: cannot renew %d running lines: %s", len(ids), exc)

    async def _sweep(self) -> None:
        """End batches whose lines have all ended but whose end was not written (the sidecar that
        recorded the last line died first, or a cancel left nothing to run)."""
        for batch_id in await self.store.active():
            await self.store.finalize(batch_id)

    # -- one line -------------------------------------------------------------------------------

    async def _line(self, item: Claimed) -> None:
        store = self.store
        try:
            info = await store.info(item.batch_id)
            if info is None or await store.ended(item.batch_id, item.index):
                await store.ack(item.entry_id)
                return
            if info.status in TERMINAL or info.status == "cancelling":
                counts = await store.record(item.batch_id, item.index, "skip")
                self._listener("skipped")
            else:
                line = await store.line(item.batch_id, item.index)
                if line is None:  # the batch ended meanwhile
                    await store.ack(item.entry_id)
                    return
                counts = await self._run(item, line, info)
            await store.ack(item.entry_id)
            if counts.ended:
                await store.finalize(item.batch_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis went away mid-line: the entry stays pending and is taken over
            log.exception("batch %s line %d: not recorded; it will be taken over", item.batch_id, item.index)

    async def _run(self, item: Claimed, line: InputLine, info: BatchInfo) -> Counts:
        s = self.settings
        result: LineResult | None = None
        reason = "retries_exhausted"
        while True:
            attempt = await self.store.next_attempt(item.batch_id, item.index)
            if attempt > s.max_attempts:  # the last attempts ran on sidecars that stopped mid-line
                break
            request_id = f"{item.batch_id}-{item.index}-{attempt}"
            try:
                result = await self.run_line(line, info, request_id, attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("batch %s line %d: the router failed", item.batch_id, item.index)
                result = LineResult(500, {"error": {"message": f"internal error: {type(exc).__name__}",
                                                    "code": "internal_error"}}, request_id, attempt)  # fmt: skip
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
