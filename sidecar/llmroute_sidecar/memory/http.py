"""``GET`` and ``DELETE /v1/conversations/{id}``: read or erase (GDPR) a stored conversation of the
caller's tenant (``x-llmroute-tenant``). Another tenant's conversation is simply not there.
Neighbours: ``http_front.py`` mounts these; ``policy.py`` owns the store.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from .. import web
from ..openai_api.errors import ApiError, bad_request
from ..openai_api.headers import check_headers
from .conversation import check_conversation_id
from .policy import ConversationMemory

__all__ = ["add_memory_routes"]

MEMORY: web.AppKey[ConversationMemory] = web.AppKey("memory", ConversationMemory)
_NAMESPACE: web.AppKey[Callable[[], str]] = web.AppKey("memory_namespace")


def _target(request: web.Request) -> tuple[ConversationMemory, str, str]:
    check_headers(request.headers)
    conversation = request.match_info["conversation_id"]
    problem = check_conversation_id(conversation)
    if problem is not None:
        raise bad_request(f"the conversation id {problem}", param="conversation_id")
    return request.app[MEMORY], request.headers.get("x-llmroute-tenant", ""), conversation


def _not_found(conversation: str) -> ApiError:
    return ApiError(
        404, f"No such conversation: {conversation!r}", param="conversation_id", code="conversation_not_found"
    )


async def get_conversation(request: web.Request) -> web.Response:
    memory, tenant, conversation = _target(request)
    messages = await memory.load(_namespace(request), tenant, conversation)
    if not messages:
        raise _not_found(conversation)
    body = {"id": conversation, "object": "conversation", "messages": messages}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def delete_conversation(request: web.Request) -> web.Response:
    memory, tenant, conversation = _target(request)
    if not await memory.erase(_namespace(request), tenant, conversation):
        raise _not_found(conversation)
    body = {"id": conversation, "object": "conversation.deleted", "deleted": True}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _namespace(request: web.Request) -> str:
    return request.app[_NAMESPACE]()


def add_memory_routes(app: web.Application, memory: ConversationMemory, namespace: Callable[[], str]) -> None:
    """``namespace``: a callable giving the routes' namespace (from the running config)."""
    app[MEMORY] = memory
    app[_NAMESPACE] = namespace
    for prefix in ("/v1", ""):
        app.router.add_get(prefix + "/conversations/{conversation_id}", get_conversation)
        app.router.add_delete(prefix + "/conversations/{conversation_id}", delete_conversation)
