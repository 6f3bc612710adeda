"""Context windows: skip backends a request does not fit, and apply the overflow policy when none fits.

A backend fits when its ``context_window`` is unknown (0) or at least the estimated input plus the
output budget (``tokens.py``), and not below the model's ``min_context_window``. When no candidate
fits, the model's ``context_overflow`` decides:

- REJECT (and unset): a 400 ``context_length_exceeded`` naming the estimate and the largest window;
- TRUNCATE_OLDEST: drop the oldest conversation units until the request fits the largest window.
  System and developer messages are always kept, and so is the newest unit. A unit is one user
  message, or one assistant message together with the tool results that answer its calls, so a tool
  call is never separated from its results. The kept conversation then starts at a user message
  where it can. The planner reports the number of dropped messages in ``x-llmroute-truncated``.

Neighbours: ``planner.py`` calls :func:`fit`; ``tokens.py`` provides per-message estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmroute_proto.v1 import config_pb2 as pb

from ..config.snapshot import BackendEntry
from ..openai_api.errors import ApiError
from .tokens import Estimate

__all__ = ["Fit", "fit", "truncate_oldest"]

Json = dict[str, Any]
_PINNED = ("system", "developer")
_RESULTS = ("tool", "function")


@dataclass(frozen=True, slots=True)
class Fit:
    """The candidates that fit, in their given order, and the body to send them."""

    candidates: list[BackendEntry]
    body: dict[str, Any]
    estimate: Estimate
    too_small: list[BackendEntry] = field(default_factory=list)
    below_minimum: list[BackendEntry] = field(default_factory=list)
    dropped: int = 0


def _units(messages: Sequence[Any]) -> tuple[list[int], list[list[int]]]:
    """(pinned message indexes, droppable units of indexes in order)."""
    pinned: list[int] = []
    units: list[list[int]] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role in _PINNED:
            pinned.append(index)
        elif role in _RESULTS and units:
            units[-1].append(index)  # results stay with the call they answer
        else:
            units.append([index])
    return pinned, units


def _role(messages: Sequence[Any], index: int) -> object:
    message = messages[index]
    return message.get("role") if isinstance(message, dict) else None


def truncate_oldest(messages: Sequence[Any], per_message: Sequence[int], budget: int) -> list[int] | None:
    """Drop the oldest units until the messages' tokens are within ``budget``.

    Returns the indexes of the messages to keep, in order, or None when even the pinned messages
    and the newest unit exceed the budget.
    """
    pinned, units = _units(messages)
    total = sum(per_message)
    start = 0
    while total > budget and start < len(units) - 1:
        total -= sum(per_message[i] for i in units[start])
        start += 1
    if total > budget:
        return None
    # A conversation should open with a user message (some providers insist); drop a leading
    # assistant unit left over from a cut, unless it is all that remains.
    while start < len(units) - 1 and _role(messages, units[start][0]) != "user":
        start += 1
    keep = list(pinned)
    for unit in units[start:]:
        keep.extend(unit)
    return sorted(keep)


def _reject(message: str) -> ApiError:
    return ApiError(400, message, param="messages", code="context_length_exceeded")


def fit(
    candidates: Sequence[BackendEntry],
    body: dict[str, Any],
    estimate: Estimate,
    *,
    model: pb.LogicalModel,
) -> Fit:
    """Keep the candidates that fit; apply the overflow policy when none does (may raise ApiError)."""
    minimum = model.min_context_window
    below: list[BackendEntry] = []
    sized = list(candidates)
    if minimum:
        below = [b for b in candidates if 0 < b.context_window < minimum]
        if below:
            sized = [b for b in candidates if not 0 < b.context_window < minimum]
        if not sized:
            largest = max(b.context_window for b in below)
            raise ApiError(
                503,
                f"model {model.name!r} needs a context window of at least {minimum} tokens "
                f"(minContextWindow), and its largest candidate offers {largest}",
                code="no_backend_available",
            )
    need = estimate.total
    fitting = [b for b in sized if b.context_window == 0 or b.context_window >= need]
    if fitting:
        too_small = [b for b in sized if 0 < b.context_window < need]
        return Fit(fitting, body, estimate, too_small, below)

    largest = max(b.context_window for b in sized)
    what = (
        f"the request needs about {need} tokens ({estimate.input_tokens} estimated input + "
        f"{estimate.output_tokens} output budget), but the largest context window among the "
        f"candidates of model {model.name!r} is {largest} tokens"
    )
    if model.context_overflow != pb.CONTEXT_OVERFLOW_POLICY_TRUNCATE_OLDEST:
        raise _reject(f"{what}; shorten the conversation or lower max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or len(estimate.per_message) != len(messages):
        raise _reject(f"{what}, and the request has no conversation to truncate")
    fixed = estimate.input_tokens - sum(estimate.per_message)  # request overhead, tool schemas
    budget = largest - estimate.output_tokens - fixed
    result = truncate_oldest(messages, estimate.per_message, budget) if budget > 0 else None
    if result is None:
        raise _reject(
            f"{what}; even truncated to the system prompt and the newest turn it does not fit "
            "(contextOverflow: truncate-oldest)"
        )
    kept_tokens = tuple(estimate.per_message[i] for i in result)
    truncated = Estimate(fixed + sum(kept_tokens), estimate.output_tokens, kept_tokens, estimate.images)
    new_body = dict(body)
    new_body["messages"] = [messages[i] for i in result]
    dropped = len(messages) - len(result)
    need = truncated.total
    fitting = [b for b in sized if b.context_window >= need]
    too_small = [b for b in sized if b.context_window < need]
    return Fit(fitting, new_body, truncated, too_small, below, dropped)
