"""Drives sealed submissions through the provider's batch API: submit, poll, collect, and resolve
every line once.

Each sidecar drives the submissions it owns (``submissions.py``): the ones it sealed, and any whose
owner stopped renewing (it stopped or died), which it claims on its next tick and then carries on
from the stored state, re-reserving the unanswered lines' estimated cost in their budgets.

- ``submitting``: before a create call its time is stored. A submission found in that state with a
  time set may have been created by a sidecar that died before it could store the provider's id, so
  the provider's list is searched first (``ProviderBatchClient.find``); only when it is not there is
  the batch created (again). A refusal that created nothing (400, 401, 404) sends every line back
  to run live; other failures are retried on the next ticks, at most ``max_submit_tries`` times.
- ``submitted``: polled every ``poll_seconds``. When the app's batch is cancelled or expires, the
  provider batch is cancelled too. When it has ended, its results are collected line by line:
  an answer is accounted once at the discounted price (``line_accounting.py``) and written to the
  output file; a refusal a live call would not retry becomes a dead letter naming the provider
  batch; a line with no result or a retryable failure goes back to the stream and runs live at
  the batch tier (of a cancelled batch: skipped).

Neighbours: ``provider_lines.py`` seals submissions, ``provider_client.py`` calls the providers,
``provider_wire.py`` reads their results, ``store.py`` records the lines' ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..adapters.base import Target
from ..adapters.errors import ErrorKind, ProviderError
from ..budget import BudgetRefusal
from ..service import RouterService
from .line_accounting import (
    bill,
    cost_of,
    line_request_id,
    restored,
    route_ref,
    settle_answer,
    settle_failure,
)
from .objects import TERMINAL, LineResult, error_line, output_line
from .provider_client import ProviderBatchClient
from .provider_lines import Holds
from .provider_wire import LineAnswer, LineFailure, anthropic_results, openai_results
from .store import BatchStore, Counts
from .submissions import LineMeta, Submission, Submissions

__all__ = ["PollSettings", "SubmissionPoller"]

log = logging.getLogger(__name__)
Result = LineAnswer | LineFailure
# A create call refused like this created nothing: the lines can run live without a double.
_NOTHING_CREATED = frozenset(
    {ErrorKind.BAD_REQUEST, ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.CONTEXT_TOO_LONG}
)


@dataclass(frozen=True)
class PollSettings:
    poll_seconds: float = 30.0  # how often each provider batch is looked at
    owner_ttl_ms: int = 30_000  # an owner who stops renewing for this long loses its submissions
    max_submit_tries: int = 3  # create calls before the lines run live instead


class SubmissionPoller:
    def __init__(
        self,
        service: RouterService,
        store: BatchStore,
        subs: Submissions,
        client: ProviderBatchClient,
        holds: Holds,
        *,
        consumer: str,
        settings: PollSettings,
        listener: Callable[[str], None],
    ) -> None:
        self.service = service
        self.store = store
        self.subs = subs
        self.client = client
        self.holds = holds
        self.consumer = consumer
        self.settings = settings
        self._listener = listener
        self._owned: set[str] = set()
        self._busy: dict[str, asyncio.Task[None]] = {}

    def owned(self) -> list[str]:
        return sorted(self._owned)

    def sealed(self, sub_id: str) -> None:
        """A submission this sidecar just sealed: submit it now."""
        self._owned.add(sub_id)
        self._start(sub_id)

    def _start(self, sub_id: str) -> None:
        if sub_id in self._busy:
            return
        task = asyncio.create_task(self._drive(sub_id))
        self._busy[sub_id] = task
        task.add_done_callback(lambda _task: self._busy.pop(sub_id, None))

    async def tick(self) -> None:
        """Drive every owned submission one step, and claim those nobody owns any more."""
        for sub_id in await self.subs.active():
            if sub_id in self._busy:
                continue
            if sub_id not in self._owned:
                if not await self.subs.claim(sub_id, self.consumer, self.settings.owner_ttl_ms):
                    continue
                await self._adopt(sub_id)
            self._start(sub_id)

    async def stop(self) -> None:
        tasks = list(self._busy.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sub_id in list(self._owned):  # another sidecar takes them over on its next tick
            with contextlib.suppress(Exception):
                await self.subs.release(sub_id, self.consumer)
        self._owned.clear()
        self.holds.close_all()

    # -- ownership ----------------------------------------------------------------------------

    async def _adopt(self, sub_id: str) -> None:
        """Carry on with a submission whose owner is gone: hold its unanswered lines' cost again."""
        self._owned.add(sub_id)
        sub = await self.subs.load(sub_id)
        if sub is None:
            return
        metas = await self.subs.lines(sub_id)
        settled = await self.subs.settled(sub_id)
        amount = sum(meta.reserved for index, meta in metas.items() if index not in settled)
        log.info(
            "provider batch submission %s (%s, %d lines) taken over from a stopped sidecar",
            sub_id,
            sub.backend,
            sub.count,
        )
        self._listener("adopted")
        charge = self.service.policies.budgets.charge(
            route=sub.route.rpartition("/")[2], tenant=sub.tenant, user=sub.user
        )
        if charge is None or amount <= 0:
            return
        held = await charge.reserve(amount)
        if isinstance(held, BudgetRefusal):
            log.warning("submission %s: its budgets would not hold its lines' cost again (%s); their "
                        "answers are still counted when they come", sub_id, held)  # fmt: skip
            return
        self.holds.adopt(sub_id, held)

    def _lost(self, sub_id: str) -> None:
        log.warning("provider batch submission %s: another sidecar owns it now", sub_id)
        self._owned.discard(sub_id)
        self.holds.close(sub_id)

    def _target(self, sub: Submission) -> Target | None:
        snapshot = self.service.store.current
        for entry in snapshot.models.values() if snapshot is not None else ():
            backend = entry.backends_by_name.get(sub.backend)
            if backend is not None and route_ref(entry.route) == sub.route:
                return backend.target
        return None

    # -- the steps ----------------------------------------------------------------------------

    async def _drive(self, sub_id: str) -> None:
        try:
            sub = await self.subs.load(sub_id)
            if sub is None:  # ended meanwhile
                self._owned.discard(sub_id)
                self.holds.close(sub_id)
                return
            info = await self.store.info(sub.batch_id)
            ending = info is None or info.status in TERMINAL or info.status in ("cancelling", "expiring")
            target = self._target(sub)
            if target is None:
                if ending or (sub.state == "submitting" and not sub.sent_at):  # nothing sent, or to wait for
                    log.error("submission %s: backend %s of route %s left the config; %s", sub_id, sub.backend,
                              sub.route, "its provider batch is not looked at again" if sub.remote_id else "not sent")  # fmt: skip
                    await self._collect(sub, {}, "backend left the config")
                else:
                    log.warning("submission %s: backend %s of route %s is not in the config; waiting", sub_id, sub.backend, sub.route)  # fmt: skip
                return
            if sub.state == "submitting" and ending and not sub.sent_at:  # never sent: nothing to send now
                await self._collect(sub, {}, "the batch ended before its lines were sent")
            elif sub.state == "submitting":
                await self._submit(sub, target)
            else:
                await self._poll(sub, target, ending=ending)
        except asyncio.CancelledError:
            raise
        except ProviderError as exc:  # looked at again on the next tick
            log.warning(
                "submission %s: the %s batch API failed (%s): %s",
                sub_id,
                exc.provider,
                exc.kind.value,
                exc.message,
            )
        except Exception:
            log.exception("submission %s: not driven this time; tried again on the next tick", sub_id)

    async def _submit(self, sub: Submission, target: Target) -> None:
        if sub.sent_at:  # a create was sent before: did it reach the provider?
            found = await self.client.find(
                target, sub.id, count=sub.count, since=sub.sent_at, exclude=await self.subs.remote_ids()
            )
            if found is not None:
                log.info(
                    "submission %s: found its %s batch %s; not sending it again",
                    sub.id,
                    sub.provider,
                    found.id,
                )
                await self._submitted(sub, found.id)
                return
            if sub.tries >= self.settings.max_submit_tries:
                await self._collect(sub, {}, f"{sub.tries} create calls failed")
                return
        requests = await self.subs.requests(sub.id)
        if not await self.subs.mark(sub.id, self.consumer, sent_at=time.time(), tries=sub.tries + 1):
            self._lost(sub.id)
            return
        try:
            remote = await self.client.submit(target, requests, sub.id)
        except ProviderError as exc:
            if exc.kind in _NOTHING_CREATED:
                log.warning("submission %s: the %s batch API refused it (%s): %s; its lines run live",
                            sub.id, sub.provider, exc.status, exc.message)  # fmt: skip
                await self._collect(sub, {}, "refused")
            else:
                log.warning("submission %s: creating the %s batch failed (%s): %s; looked for and retried",
                            sub.id, sub.provider, exc.kind.value, exc.message)  # fmt: skip
            return
        await self._submitted(sub, remote.id)

    async def _submitted(self, sub: Submission, remote_id: str) -> None:
        await self.subs.remember_remote(remote_id)
        if not await self.subs.mark(sub.id, self.consumer, state="submitted", remote_id=remote_id):
            self._lost(sub.id)
            return
        await self.subs.drop_requests(sub.id)
        for _ in range(sub.count):
            self._listener("submitted")
        log.info("submission %s: %d lines in %s batch %s", sub.id, sub.count, sub.provider, remote_id)

    async def _poll(self, sub: Submission, target: Target, *, ending: bool) -> None:
        if ending and not sub.cancel_sent:
            try:
                await self.client.cancel(target, sub.remote_id)
            except ProviderError as exc:  # e.g. it ended already
                log.info(
                    "submission %s: cancelling %s batch %s: %s",
                    sub.id,
                    sub.provider,
                    sub.remote_id,
                    exc.message,
                )
            await self.subs.mark(sub.id, self.consumer, cancel_sent=True)
        try:
            remote = await self.client.get(target, sub.remote_id)
        except ProviderError as exc:
            if exc.kind != ErrorKind.NOT_FOUND:
                raise
            log.warning("submission %s: the %s batch %s is gone (%s); its lines run live", sub.id, sub.provider, sub.remote_id, exc.message)  # fmt: skip
            await self._collect(sub, {}, "gone at the provider")
            return
        if not remote.ended:
            return
        first, second = await self.client.results(target, remote)
        if sub.provider == "anthropic":
            results = anthropic_results(first, model=target.model)
        else:
            results = openai_results(sub.provider, first, second, model=target.model)
        log.info("submission %s: %s batch %s ended %s with %d results of %d lines",
                 sub.id, sub.provider, remote.id, remote.status, len(results), sub.count)  # fmt: skip
        await self._collect(sub, results, f"{sub.provider} batch {remote.id} ended {remote.status}")

    # -- the lines ----------------------------------------------------------------------------

    async def _collect(self, sub: Submission, results: dict[int, Result], why: str) -> None:
        """Resolve every line of ``sub`` by its result, then end the submission."""
        info = await self.store.info(sub.batch_id)
        status = info.status if info is not None else ""
        for index, meta in sorted((await self.subs.lines(sub.id)).items()):
            result = results.get(index)
            if isinstance(result, LineAnswer):
                await self._answered(sub, index, meta, result)
            elif isinstance(result, LineFailure) and not result.worth_another_try:
                await self._refused(sub, index, meta, result)
            else:
                await self._unanswered(sub, index, status)
        self.holds.close(sub.id)
        if not await self.subs.end(sub, self.consumer):
            log.warning("submission %s: ended by another sidecar", sub.id)
        self._owned.discard(sub.id)
        log.info("submission %s resolved (%s)", sub.id, why)

    async def _answered(self, sub: Submission, index: int, meta: LineMeta, result: LineAnswer) -> None:
        line = await self.store.line(sub.batch_id, index)
        line_bill = bill(self.service, sub, index, meta, line.body if line is not None else None)
        usage, cost = cost_of(line_bill, result.response)
        first, cost = await self.subs.account(sub.id, index, cost)
        reservation = self.holds.take(sub.id, index)
        if first:
            if reservation is None:
                self.holds.spend(sub.id, cost)
            cost = await settle_answer(
                self.service, sub, index, meta, line_bill, result.response, reservation=reservation
            )
        elif reservation is not None:
            reservation.release()
        if line is None:  # the app's batch ended (expired, cancelled) before the answer came
            return
        response = restored(line_bill.request, result.response)
        answer = LineResult(200, response, result.request_id or line_request_id(sub, index), 1,
                            usage.input_tokens, usage.output_tokens, cost)  # fmt: skip
        if await self.subs.resolved(sub.id, index, "out"):
            self._listener("completed")
        await self._ended(
            sub, await self.store.record(
                sub.batch_id, index, "out", output_line(line, answer), input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens, cost_micro_usd=cost,
            ),
        )  # fmt: skip

    async def _refused(self, sub: Submission, index: int, meta: LineMeta, result: LineFailure) -> None:
        line = await self.store.line(sub.batch_id, index)
        reservation = self.holds.take(sub.id, index)
        if reservation is not None:
            reservation.release()
        if await self.subs.resolved(sub.id, index, "err"):
            line_bill = bill(self.service, sub, index, meta, line.body if line is not None else None)
            await settle_failure(self.service, sub, index, meta, line_bill, result.status)
            self._listener("failed")
        if line is None:
            return
        error = result.body.get("error")
        code = ""
        if isinstance(error, dict):
            code = str(error.get("code") or error.get("type") or "")
        body = {
            "error": {
                "message": f"the {sub.provider} batch {sub.remote_id} refused the line: {result.error.message}",
                "code": code or result.error.kind.value,
            }
        }
        dead = error_line(line, LineResult(result.status, body, "", 1), "not_retryable")
        await self._ended(sub, await self.store.record(sub.batch_id, index, "err", dead))

    async def _unanswered(self, sub: Submission, index: int, status: str) -> None:
        reservation = self.holds.take(sub.id, index)
        if reservation is not None:  # the live run reserves its own
            reservation.release()
        if status == "in_progress":
            if await self.subs.requeue(sub, index):
                self._listener("fallback")
        elif status == "cancelling":
            if await self.subs.resolved(sub.id, index, "skip"):
                self._listener("skipped")
            await self._ended(sub, await self.store.record(sub.batch_id, index, "skip"))
        # expiring or ended: the line was recorded already

    async def _ended(self, sub: Submission, counts: Counts) -> None:
        if counts.ended:
            await self.store.finalize(sub.batch_id)
