"""Request coalescing: identical in-flight requests with one ``Idempotency-Key`` share one call.

``RouterService.chat`` (``service.py``) sends non-streaming requests that carry an
``Idempotency-Key`` header through :meth:`Coalescer.run`. The first request with a key (the leader)
starts the shared call as its own task; later requests with the same key and the same body (the
followers) await that task's result, or its error, instead of calling upstream again. Nothing is kept
once the call ends: a request with the same key after that is a new call (caching is the cache's
job, not this module's).

Keys are scoped by the caller (the service uses tenant, user and key), so two apps that happen to
pick the same key never share. The same key with a *different* body while the first is in flight
is refused with **422** ``idempotency_key_reused`` (the status the IETF Idempotency-Key draft gives
for a reused key with another payload): answering it with the other body's result would be wrong,
and silently calling upstream again would break the promise the key makes.

Cancellation: every participant awaits the shared task through :func:`asyncio.shield`, so a leader
whose app disconnects does not cancel the call its followers wait for. When the last participant
leaves, the call is cancelled (and forgotten at once, so a new request starts afresh).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from ..openai_api.errors import ApiError

__all__ = ["Coalescer", "fingerprint"]

T = TypeVar("T")


def fingerprint(body: dict[str, Any]) -> str:
    """A digest of a JSON body that ignores key order."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(eq=False)
class _Flight(Generic[T]):
    fingerprint: str
    task: asyncio.Task[T]
    waiters: int = 0


class Coalescer(Generic[T]):
    """In-flight shared calls by scope key."""

    def __init__(self, *, on_join: Callable[[], None] | None = None) -> None:
        self._flights: dict[Hashable, _Flight[T]] = {}
        self._on_join = on_join

    def __len__(self) -> int:
        return len(self._flights)

    async def run(
        self, key: Hashable, digest: str, call: Callable[[], Coroutine[Any, Any, T]]
    ) -> tuple[T, bool]:
        """``call()``'s result, shared with identical requests in flight; the flag says whether this
        request joined another's call (a follower) rather than starting it."""
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(digest, asyncio.create_task(call()))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda task: self._finished(key, flight))
            joined = False
        elif flight.fingerprint != digest:
            raise ApiError(
                422,
                "this Idempotency-Key is already in use by an in-flight request with a different "
                "body; use a new key for a different request",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        else:
            joined = True
            if self._on_join is not None:
                self._on_join()
        flight.waiters += 1
        try:
            result = await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Nobody waits any more: stop the upstream call, and let the next request start anew.
                flight.task.cancel()
                if self._flights.get(key) is flight:
                    del self._flights[key]
            raise
        except BaseException:
            flight.waiters -= 1
            raise
        flight.waiters -= 1
        return result, joined

    def _finished(self, key: Hashable, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # seen here, so a call whose waiters all left logs no warning
