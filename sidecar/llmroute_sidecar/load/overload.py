"""The app's answer when every candidate backend is saturated on this sidecar: a quick 429.

``service.py`` asks :func:`overloaded_error` first when the attempt loop gives up; it answers only when
every candidate refused with :class:`~.limiter.Saturated` (nothing reached a provider). The 429 has
``code: "overloaded"`` and a ``Retry-After`` from the shortest expected wait, so SDKs that retry on
429 (the OpenAI SDK does) back off for about the right time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..adapters.errors import ProviderError
from ..openai_api.errors import ApiError
from .limiter import Saturated

__all__ = ["overloaded_error"]

_MAX_RETRY_AFTER_S = 60


def overloaded_error(model: str, errors: Sequence[tuple[str, ProviderError]]) -> ApiError | None:
    """The 429 for ``errors`` if every one is a saturation, else None."""
    if not errors or not all(isinstance(err, Saturated) for _, err in errors):
        return None
    waits = [err.retry_after for _, err in errors if err.retry_after is not None]
    seconds = min(_MAX_RETRY_AFTER_S, max(1, math.ceil(min(waits)))) if waits else 1
    names = ", ".join(dict.fromkeys(name for name, _ in errors))
    return ApiError(
        429,
        f"every backend of model {model!r} is at its concurrency limit on this sidecar with no room "
        f"in its queue ({names}); retry after {seconds}s",
        code="overloaded",
        headers={"retry-after": str(seconds)},
    )
