"""Provider batch APIs for the batch worker, in one place: the lines it offers, the submissions it
drives, the reservations it holds.

Wires ``provider_lines.py`` (admission, groups, sealing) to ``provider_poller.py`` (submit, poll,
collect) over ``submissions.py`` (Redis), with ``provider_client.py`` for the HTTP calls. The
worker (``worker.py``) offers each line of a chat batch (:meth:`offer`), flushes the groups when the
stream runs dry (:meth:`flush`), ticks the poller (:meth:`tick`), renews what this sidecar holds
(:meth:`renew`) and stops it (:meth:`stop`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..service import RouterService
from ..upstream import UpstreamClient
from .objects import InputLine
from .provider_client import ProviderBatchClient
from .provider_lines import FormingSettings, Holds, Offer, ProviderLines
from .provider_poller import PollSettings, SubmissionPoller
from .store import BatchInfo, BatchStore, Claimed
from .submissions import Submissions

__all__ = ["ProviderBatchSettings", "ProviderBatches"]


@dataclass(frozen=True)
class ProviderBatchSettings:
    poll_seconds: float = 30.0  # how often a provider batch is looked at
    flush_seconds: float = 5.0  # a line waits at most this long for more lines of its provider batch
    max_lines: int = 10_000  # lines per provider batch
    owner_seconds: float = 30.0  # a submission whose sidecar stops renewing it this long is taken over
    max_submit_tries: int = 3  # failed create calls before the lines run live


class ProviderBatches:
    def __init__(
        self,
        store: BatchStore,
        service: RouterService,
        upstream: UpstreamClient,
        *,
        consumer: str,
        settings: ProviderBatchSettings,
        listener: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.subs = Submissions(store)
        holds = Holds()
        ttl_ms = int(settings.owner_seconds * 1000)
        self.poller = SubmissionPoller(
            service,
            store,
            self.subs,
            ProviderBatchClient(upstream),
            holds,
            consumer=consumer,
            settings=PollSettings(settings.poll_seconds, ttl_ms, settings.max_submit_tries),
            listener=listener,
        )
        self.lines = ProviderLines(
            service,
            self.subs,
            holds,
            consumer=consumer,
            settings=FormingSettings(
                max_lines=settings.max_lines, flush_seconds=settings.flush_seconds, owner_ttl_ms=ttl_ms
            ),
            on_sealed=self.poller.sealed,
        )
        self.consumer = consumer
        self._ttl_ms = ttl_ms

    async def assigned(self, item: Claimed) -> bool:
        """The line is in a submission: its poller resolves it, not the stream entry."""
        return bool(await self.subs.assigned(item.batch_id, item.index))

    async def offer(self, item: Claimed, line: InputLine, info: BatchInfo) -> Offer:
        if item.live:  # back from a provider batch: it runs live now
            return None
        return await self.lines.offer(item, line, info)

    def held_entries(self) -> list[str]:
        return self.lines.held_entries()

    async def flush(self, *, due_only: bool = False) -> None:
        await self.lines.flush(due_only=due_only)

    async def tick(self) -> None:
        await self.poller.tick()

    async def renew(self) -> None:
        await self.subs.renew(self.poller.owned(), self.consumer, self._ttl_ms)

    async def stop(self) -> None:
        self.lines.drop()
        await self.poller.stop()
