"""Conversation memory on the request path: rebuild a request's context before routing, store the
new turn and its answer after.

``prepare`` runs before the planner: it loads the conversation, puts the request's own system
messages first, then the stored history, then the new turn, and fits the result into the largest
context window among the model's candidates (the planner then picks among the candidates it fits,
as for any request). With ``overflow: summarize`` the oldest stored turns are first replaced by a
summary from the route's summarizer model, written back to Redis; what still does not fit is cut
by the sliding window. Either way ``x-llmroute-memory`` says what was sent: ``history`` stored
messages, ``left-out`` of them, ``summarized``. ``record`` runs after a successful answer and
appends the new turn and the answer (redacted, on a route that redacts PII). Without a Redis, or with Redis down, a request that names a
conversation is refused (a model answering without its context would be a silent drop).
Neighbours: ``conversation.py`` (pure), ``store.py`` (Redis), ``service.py`` (calls these).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..openai_api.errors import ApiError, bad_request
from ..routing.tokens import estimate_chat
from .conversation import (
    assistant_message,
    check_conversation_id,
    oldest_to_summarize,
    split_turn,
    summary_message,
    summary_request,
    window,
)
from .store import MemoryStore

if TYPE_CHECKING:
    from prometheus_client import Counter

    from ..request_policies import Request

__all__ = ["ConversationMemory", "MemoryTurn", "Summarize"]

log = logging.getLogger(__name__)
Json = dict[str, Any]
T = TypeVar("T")
#: Asks a logical model of the request's route for a summary: (request, body) -> summary text.
Summarize = Callable[["Request", Json], Awaitable[str]]


@dataclass
class MemoryTurn:
    """What a request added to and took from its conversation."""

    conversation: str
    turn: list[Any]  # the new messages, stored after the answer
    history: int = 0  # stored messages the request carried
    left_out: int = 0  # of those, left out by the sliding window
    summarized: int = 0  # replaced by a summary in this request

    def header(self) -> str:
        return f"history={self.history}; left-out={self.left_out}; summarized={self.summarized}"


class ConversationMemory:
    def __init__(self, store: MemoryStore | None, *, events: Counter | None = None) -> None:
        self.store = store
        self._events = events

    def _count(self, route: str, event: str, amount: int = 1) -> None:
        if self._events is not None and amount:
            self._events.labels(route, event).inc(amount)

    async def prepare(self, request: Request, summarize: Summarize) -> None:
        spec = request.policies.memory
        conversation = request.hints.conversation
        if spec is None or not conversation or request.kind != "chat":
            return
        problem = check_conversation_id(conversation)
        if problem is not None:
            raise bad_request(f"x-llmroute-conversation {problem}", code="invalid_header")
        store = self._usable()
        namespace, tenant = request.entry.route.namespace, request.hints.tenant
        messages = request.body.get("messages")
        pinned, turn = split_turn(messages if isinstance(messages, list) else [])
        history = await self._call(store.load(namespace, tenant, conversation))
        state = MemoryTurn(conversation, turn, history=len(history))
        own = estimate_chat({**request.body, "messages": [*pinned, *turn]})
        budget = _history_budget(request, own.total)
        if budget and spec.summarize and history:
            history = await self._summarized(request, store, state, history, budget, summarize)
        full = [*pinned, *history, *turn]
        if budget:
            sent, state.left_out = window(
                full, estimate_chat({"messages": full}).per_message, budget + sum(own.per_message)
            )
            full = sent
            self._count(request.route, "left_out", state.left_out)
        request.body = {**request.body, "messages": full}
        request.memory = state

    async def _summarized(
        self,
        request: Request,
        store: MemoryStore,
        state: MemoryTurn,
        history: list[Json],
        budget: int,
        summarize: Summarize,
    ) -> list[Json]:
        """``history`` with its oldest turns replaced by a summary, stored so, when it exceeds
        ``budget``; else as it is."""
        spec = request.policies.memory
        assert spec is not None
        per = estimate_chat({"messages": history}).per_message
        cut = oldest_to_summarize(history, per, budget) if sum(per) > budget else 0
        if not cut:
            return history
        text = await summarize(request, summary_request(spec.summarizer, history[:cut]))
        history = [summary_message(text), *history[cut:]]
        await self._call(store.append(
            request.entry.route.namespace, request.hints.tenant, state.conversation, history,
            tokens=sum(estimate_chat({"messages": history}).per_message), replace=True,
            ttl_seconds=spec.ttl_seconds, max_tokens_per_tenant=spec.max_tokens_per_tenant,
        ))  # fmt: skip
        state.summarized = cut
        self._count(request.route, "summarized", cut)
        return history

    async def record(self, request: Request, response: Json) -> None:
        """Store the new turn and its answer after a successful request. ``response`` is the answer
        as the provider gave it: on a route that redacts PII, the shared Redis keeps the turn and the
        answer as the provider saw them (placeholders, not the personal data, which never leaves the
        pod); otherwise they are what the app sent and got."""
        state = request.memory
        spec = request.policies.memory
        if state is None or spec is None or self.store is None:
            return
        turn = state.turn
        if request.redaction is not None:
            sent = request.body.get("messages")  # redacted: the stored history, then this turn
            if isinstance(sent, list) and len(sent) >= len(turn):
                turn = sent[len(sent) - len(turn) :]
        answer = assistant_message(response)
        stored = [*turn, *([answer] if answer is not None else [])]
        tokens = sum(estimate_chat({"messages": stored}).per_message)
        try:
            evicted = await self.store.append(
                request.entry.route.namespace, request.hints.tenant, state.conversation, stored,
                tokens=tokens, ttl_seconds=spec.ttl_seconds, max_tokens_per_tenant=spec.max_tokens_per_tenant,
            )  # fmt: skip
        except Exception as exc:  # the answer is already out; say so loudly, do not fail it
            log.warning("conversation %s: the turn could not be stored: %s", state.conversation, exc)
            self._count(request.route, "store_failed")
            return
        self._count(request.route, "evicted", evicted)

    async def erase(self, namespace: str, tenant: str, conversation: str) -> bool:
        return await self._call(self._usable().erase(namespace, tenant, conversation))

    async def load(self, namespace: str, tenant: str, conversation: str) -> list[Json]:
        return await self._call(self._usable().load(namespace, tenant, conversation))

    def _usable(self) -> MemoryStore:
        if self.store is None:
            raise ApiError(
                400,
                "conversation memory needs a shared Redis: start the sidecar with --redis-url (Helm: "
                "sidecar.redisUrl), or send the whole conversation without x-llmroute-conversation",
                code="memory_unavailable",
            )
        return self.store

    @staticmethod
    async def _call(step: Awaitable[T]) -> T:
        try:
            return await step
        except ApiError:
            raise
        except Exception as exc:  # Redis down or slow: without the history the answer would be wrong
            raise ApiError(
                503, f"conversation memory is unavailable (Redis: {exc})", code="memory_unavailable"
            ) from None


def _history_budget(request: Request, own_tokens: int) -> int:
    """Tokens the stored history may take: the largest window among the model's candidates less what
    the request itself needs (``own_tokens``: its messages, overhead, tools and output budget); 0
    when a candidate's window is unknown, since such a candidate takes any length."""
    windows = [b.context_window for b in request.entry.backends]
    if not windows or not all(windows):
        return 0
    return max(1, max(windows) - own_tokens)
