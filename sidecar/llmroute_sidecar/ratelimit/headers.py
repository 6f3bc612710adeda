"""The rate-limit headers of an answer, in OpenAI's shape, so SDKs and apps that already read
OpenAI's limits read ours the same way.

``x-ratelimit-limit-requests`` / ``-remaining-requests`` / ``-reset-requests`` describe the tightest
request limit of the route (fewest requests left), and the ``-tokens`` variants the tightest token
limit; a route without a limit of a kind sends no headers of that kind. Reset values are the time
until that bucket is full again, in OpenAI's (Go's) duration format: ``"20ms"``, ``"1s"``,
``"1.5s"``, ``"6m0s"``, ``"1h0m0s"``, rounded up to the millisecond so a client never retries early.
``retry-after`` (whole seconds, at least 1) is added by the limiter on refusals. Pure functions;
``limiter.py`` calls them with levels from ``local.py`` or ``redis_buckets.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from . import bucket

__all__ = ["BucketView", "openai_duration", "rate_headers", "retry_after_header"]


@dataclass(frozen=True)
class BucketView:
    """One bucket as the headers see it: ``kind`` is ``"requests"`` or ``"tokens"``."""

    kind: str
    capacity: int
    level: float


def openai_duration(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*`` (Go's ``time.Duration`` format at
    millisecond resolution)."""
    millis = max(0, math.ceil(seconds * 1000 - 1e-6))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up and at least 1 (0 would invite a busy loop)."""
    return str(max(1, math.ceil(seconds - 1e-9)))


def _tightest(views: Sequence[BucketView]) -> BucketView:
    # Fewest left first; among equals, the one that takes longest to refill.
    return min(views, key=lambda v: (bucket.remaining(v.level), -bucket.until_full(v.level, v.capacity)))


def rate_headers(views: Sequence[BucketView]) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of a decision, from every bucket's level after it."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        of_kind = [v for v in views if v.kind == kind]
        if not of_kind:
            continue
        tight = _tightest(of_kind)
        headers[f"x-ratelimit-limit-{kind}"] = str(tight.capacity)
        headers[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining(tight.level))
        headers[f"x-ratelimit-reset-{kind}"] = openai_duration(bucket.until_full(tight.level, tight.capacity))
    return headers
