"""Rate limits in the sidecar (``rateLimits`` of a route): token buckets of requests and tokens per
minute per user, tenant or route, shared across replicas through Redis when one is configured.

``limiter`` (the entry point), ``bucket`` (the arithmetic), ``local`` (in-process buckets),
``redis_buckets`` (shared buckets and their Lua script; imported only when a Redis client is given,
so it is not re-exported here), ``headers`` (OpenAI's ``x-ratelimit-*`` headers).
"""

from __future__ import annotations

from .headers import openai_duration
from .limiter import ANONYMOUS, LimitSpec, RateDecision, RateLimiter

__all__ = ["ANONYMOUS", "LimitSpec", "RateDecision", "RateLimiter", "openai_duration"]
