"""Rate limits of routes (``rateLimits``): requests and tokens per minute per user, tenant or route.

The service asks :meth:`RateLimiter.admit` before a request goes upstream and :meth:`settle` after
it, with the tokens it actually used. Admission is all-or-nothing over every limit of the route: one
request and the estimated tokens must fit in every bucket, or nothing is taken from any. Token
buckets are charged the estimate up front and corrected by ``settle``: a request that used more
puts its bucket into debt, delaying later requests; one that used less gets the difference back
(never above capacity). Every decision carries OpenAI's ``x-ratelimit-*`` headers (``headers.py``);
a refusal adds ``retry-after``, and the service answers it with a 429.

Identities: a ``user`` limit keys each user id separately, and every request without a user id
shares one anonymous bucket, ``"-"`` (so anonymous traffic is limited as one user, not unlimited);
a ``tenant`` limit likewise. A ``route`` limit is one bucket for the whole route.

Where buckets live: with a Redis client, in Redis (``redis_buckets.py``), so a limit holds across
all replicas of a workload. Without one, or while Redis is unusable, in this process
(``local.py``); **the limit then holds per sidecar, not across replicas** (N replicas admit up to N
times the limit). The first failing call pays at most ``redis_timeout``; the outage is logged once,
every later call goes straight to the local buckets, and a background probe pings Redis with
growing backoff (``redis_retry`` up to ``redis_retry_max`` seconds) and switches back when it
answers. State is not carried between the two stores: local debt is forgotten on recovery, and a
restarted Redis starts with full buckets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import bucket
from .bucket import Charge, Outcome
from .headers import BucketView, rate_headers, retry_after_header
from .local import LocalBuckets

if TYPE_CHECKING:
    import redis.asyncio

    from .redis_buckets import RedisBuckets

__all__ = ["ANONYMOUS", "KEYS", "LimitSpec", "RateDecision", "RateLimiter"]

log = logging.getLogger(__name__)

#: The id that stands for "no user id" (or "no tenant") in a ``user`` (``tenant``) limit.
ANONYMOUS = "-"
#: What a limit may be keyed by.
KEYS = frozenset({"user", "tenant", "route"})


@dataclass(frozen=True)
class LimitSpec:
    """One entry of a route's ``rateLimits``; a per-minute amount of 0 means no such limit."""

    key: str
    requests_per_minute: int = 0
    tokens_per_minute: int = 0

    def __post_init__(self) -> None:
        if self.key not in KEYS:
            raise ValueError(f"rate limit key must be one of {sorted(KEYS)}, not {self.key!r}")
        if self.requests_per_minute < 0 or self.tokens_per_minute < 0:
            raise ValueError("rate limits per minute must be 0 (none) or more")


@dataclass(frozen=True)
class RateDecision:
    """An admission: whether it passed, how long to wait if not (seconds, exact), the headers of
    the answer, and which limit refused (``"user requestsPerMinute=60"``) for the error message."""

    allowed: bool
    retry_after: float
    headers: Mapping[str, str] = field(default_factory=dict)
    refused_by: str = ""


@dataclass(frozen=True)
class _Part:
    charge: Charge
    kind: str  # "requests" | "tokens"
    label: str


def _parts(
    scope: str, limits: Sequence[LimitSpec], user: str, tenant: str, tokens: int | None
) -> list[_Part]:
    """The buckets an admission charges (``tokens`` given) or a settlement corrects (None: only
    token buckets), in a stable order."""
    parts: list[_Part] = []
    for index, spec in enumerate(limits):
        who = {
            "user": f"user={user or ANONYMOUS}",
            "tenant": f"tenant={tenant or ANONYMOUS}",
            "route": "route",
        }
        who_key = who[spec.key]
        # The braces are a Redis Cluster hash tag: all buckets of a route in one slot.
        prefix = f"llmroute:rl:{{{scope}}}:{index}:{who_key}"
        if spec.requests_per_minute and tokens is not None:
            rpm = spec.requests_per_minute
            parts.append(
                _Part(Charge(f"{prefix}:req", rpm, 1), "requests", f"{spec.key} requestsPerMinute={rpm}")
            )
        if spec.tokens_per_minute:
            tpm = spec.tokens_per_minute
            amount = max(0, tokens or 0)
            parts.append(
                _Part(Charge(f"{prefix}:tok", tpm, amount), "tokens", f"{spec.key} tokensPerMinute={tpm}")
            )
    return parts


class RateLimiter:
    """Admission and settlement against a route's limits, in Redis when given and up, else local."""

    def __init__(
        self,
        *,
        redis: redis.asyncio.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        redis_timeout: float = 0.3,
        redis_retry: float = 0.5,
        redis_retry_max: float = 5.0,
    ) -> None:
        self._local = LocalBuckets(clock=clock, max_keys=max_keys)
        self._shared: RedisBuckets | None = None
        self._errors: tuple[type[BaseException], ...] = ()
        if redis is not None:
            # Imported only here, so a sidecar without --redis-url never loads redis-py.
            from .redis_buckets import OUTAGE_ERRORS, RedisBuckets

            self._shared = RedisBuckets(redis, timeout=redis_timeout)
            self._errors = OUTAGE_ERRORS
        self._retry = redis_retry
        self._retry_max = redis_retry_max
        self._probe: asyncio.Task[None] | None = None  # set while Redis is down

    @property
    def redis_up(self) -> bool:
        """Whether buckets are shared right now (False without Redis and during an outage)."""
        return self._shared is not None and self._probe is None

    async def admit(
        self, *, scope: str, limits: Sequence[LimitSpec], user: str, tenant: str, tokens: int
    ) -> RateDecision:
        """Take one request and ``tokens`` (the estimate) from every bucket of the route, or none."""
        parts = _parts(scope, limits, user, tenant, tokens)
        if not parts:
            return RateDecision(True, 0.0, {})
        charges = [p.charge for p in parts]
        outcome = await self._admit_shared(charges)
        if outcome is None:
            outcome = self._local.admit(charges)
        headers = rate_headers(
            [
                BucketView(p.kind, p.charge.capacity, level)
                for p, level in zip(parts, outcome.levels, strict=True)
            ]
        )
        if outcome.allowed:
            return RateDecision(True, 0.0, headers)
        waits = [
            bucket.wait(level, p.charge.amount, p.charge.capacity)
            for p, level in zip(parts, outcome.levels, strict=True)
        ]
        longest = max(range(len(parts)), key=waits.__getitem__)
        headers["retry-after"] = retry_after_header(waits[longest])
        return RateDecision(False, waits[longest], headers, parts[longest].label)

    async def settle(
        self,
        *,
        scope: str,
        limits: Sequence[LimitSpec],
        user: str,
        tenant: str,
        estimated_tokens: int,
        actual_tokens: int,
    ) -> None:
        """Correct the token buckets by ``actual - estimated`` (debt if positive, refund if not)."""
        correction = actual_tokens - estimated_tokens
        if correction == 0:
            return
        charges = [
            Charge(p.charge.key, p.charge.capacity, correction)
            for p in _parts(scope, limits, user, tenant, None)
        ]
        if not charges:
            return
        if self.redis_up and self._shared is not None:
            try:
                await self._shared.settle(charges)
                return
            except self._errors as exc:
                self._went_down(exc)
        self._local.settle(charges)

    async def close(self) -> None:
        """Stop the outage probe; the Redis client belongs to the caller and stays open."""
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)

    # -- Redis outages ----------------------------------------------------------------------------

    async def _admit_shared(self, charges: Sequence[Charge]) -> Outcome | None:
        if not self.redis_up or self._shared is None:
            return None
        try:
            return await self._shared.admit(charges)
        except self._errors as exc:
            self._went_down(exc)
            return None

    def _went_down(self, exc: BaseException) -> None:
        if self._probe is not None:  # already known (a concurrent call failed too)
            return
        log.warning(
            "Redis is unusable (%s: %s); rate limits now hold per sidecar, not across replicas, "
            "until it answers again",
            type(exc).__name__,
            exc,
        )
        self._probe = asyncio.create_task(
            self._recover(time.monotonic()), name="llmroute-ratelimit-redis-probe"
        )

    async def _recover(self, since: float) -> None:
        assert self._shared is not None
        delay = self._retry
        while True:
            await asyncio.sleep(delay)
            try:
                await self._shared.ping()
            except self._errors:
                delay = min(delay * 2, self._retry_max)
                continue
            break
        log.info(
            "Redis answers again after %.1fs; rate limits are shared across replicas again",
            time.monotonic() - since,
        )
        self._probe = None
