"""The OpenAI Files and Batches endpoints of the app-facing HTTP server.

``POST/GET /v1/files``, ``GET/DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``,
``POST/GET /v1/batches``, ``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel``, so that
``client.files.create(...)`` and ``client.batches.create(...)`` of the official SDK work unchanged.
Files and batches belong to the caller's tenant (``x-llmroute-tenant``; none is a tenant of its
own): another tenant's ids answer 404, as if they did not exist. Without a shared Redis there is
nowhere to keep jobs that outlive the sidecar, and every call says so with a 400. Neighbours:
``http_front.py`` mounts these and supplies the error middleware; ``store.py`` keeps the state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from .. import web
from ..openai_api.errors import ApiError, bad_request
from ..openai_api.headers import check_headers
from ..openai_api.validate import parse_json
from ..web.multipart import MultipartError, parse_form_data
from .objects import batch_request, check_purpose, not_found, parse_input, parse_list_query
from .store import BatchStore

__all__ = ["BATCHES", "add_batch_routes"]

BATCHES: web.AppKey[BatchStore | None] = web.AppKey("batches", BatchStore)
_MAX_FILENAME = 255
T = TypeVar("T")
Lookup = Callable[[BatchStore, str, str], Awaitable[T | None]]


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _store(request: web.Request) -> BatchStore:
    store = request.app.get(BATCHES)
    if store is None:
        raise ApiError(
            400,
            "files and batches need a shared Redis to keep jobs across sidecar restarts: start the sidecar "
            "with --redis-url (Helm: sidecar.redisUrl)",
            code="batches_unavailable",
        )
    return store


def _who(request: web.Request) -> tuple[str, str]:
    check_headers(request.headers)
    return request.headers.get("x-llmroute-tenant", ""), request.headers.get("x-llmroute-user", "")


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    shown = items[:limit]
    return {
        "object": "list",
        "data": shown,
        "first_id": shown[0]["id"] if shown else None,
        "last_id": shown[-1]["id"] if shown else None,
        "has_more": len(items) > limit,
    }


# -- files --------------------------------------------------------------------------------------


async def _upload(request: web.Request) -> tuple[str, str, bytes]:
    """(purpose, filename, content) of a multipart upload, every part checked. The whole body is
    read first, so the sidecar's body limit bounds an upload (413 past it)."""
    if not request.content_type.startswith("multipart/"):
        raise ApiError(
            415,
            "a file upload must be multipart/form-data with 'purpose' and 'file'",
            code="invalid_content_type",
        )
    body = await request.read()
    try:
        parts = parse_form_data(body, request.headers.get("content-type", ""))
    except MultipartError as exc:
        raise bad_request(f"the multipart body cannot be read: {exc}") from None
    purpose: str | None = None
    filename, content = "", None
    for part in parts:
        if part.name == "purpose" and purpose is None:
            try:
                purpose = part.content.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise bad_request("the 'purpose' part is not UTF-8 text", param="purpose") from None
        elif part.name == "file" and content is None:
            filename = (part.filename or "upload.jsonl")[:_MAX_FILENAME]
            content = part.content
    if content is None:
        raise bad_request("the upload has no 'file' part", param="file")
    return check_purpose(purpose), filename, content


async def create_file(request: web.Request) -> web.Response:
    store = _store(request)
    tenant, _user = _who(request)
    purpose, filename, content = await _upload(request)
    if purpose == "batch":
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("a batch file must be UTF-8 JSON lines", param="file") from None
    return _json(await store.put_file(content, filename=filename, purpose=purpose, tenant=tenant))


async def list_files(request: web.Request) -> web.Response:
    store = _store(request)
    tenant, _user = _who(request)
    after, limit = parse_list_query(dict(request.query))
    purpose = request.query.get("purpose", "")
    return _json(_page(await store.list_files(tenant, after=after, limit=limit, purpose=purpose), limit))


async def _owned(request: web.Request, kind: str, lookup: Lookup[T]) -> tuple[str, T]:
    """The id in the path and what ``lookup(store, id, tenant)`` finds of the caller's tenant; 404
    when it finds nothing (someone else's object looks like no object at all)."""
    store = _store(request)
    tenant, _user = _who(request)
    param = f"{kind}_id"
    object_id = request.match_info[param]
    found = await lookup(store, object_id, tenant)
    if found is None:
        raise not_found(kind, object_id, param)
    return object_id, found


async def get_file(request: web.Request) -> web.Response:
    _id, meta = await _owned(request, "file", BatchStore.file)
    return _json(meta)


async def file_content(request: web.Request) -> web.Response:
    _id, content = await _owned(request, "file", BatchStore.file_content)
    return web.Response(body=content, content_type="application/octet-stream")


async def delete_file(request: web.Request) -> web.Response:
    file_id, _deleted = await _owned(request, "file", BatchStore.delete_file)
    return _json({"id": file_id, "object": "file", "deleted": True})


# -- batches ------------------------------------------------------------------------------------


async def create_batch(request: web.Request) -> web.Response:
    store = _store(request)
    tenant, user = _who(request)
    wanted = batch_request(parse_json(await request.read()))
    meta = await store.file(wanted.input_file_id, tenant)
    if meta is None:
        raise not_found("file", wanted.input_file_id, "input_file_id")
    if meta.get("purpose") != "batch":
        raise bad_request("the input file's purpose must be 'batch'", param="input_file_id")
    content = await store.file_content(wanted.input_file_id, tenant) or b""
    lines, errors = parse_input(content, wanted.endpoint)
    return _json(await store.create_batch(wanted, lines, errors, tenant=tenant, user=user))


async def list_batches(request: web.Request) -> web.Response:
    store = _store(request)
    tenant, _user = _who(request)
    after, limit = parse_list_query(dict(request.query))
    return _json(_page(await store.list_batches(tenant, after=after, limit=limit), limit))


async def get_batch(request: web.Request) -> web.Response:
    _id, batch = await _owned(request, "batch", BatchStore.batch)
    return _json(batch)


async def cancel_batch(request: web.Request) -> web.Response:
    _id, batch = await _owned(request, "batch", BatchStore.cancel)
    return _json(batch)


def add_batch_routes(app: web.Application, store: BatchStore | None) -> None:
    app[BATCHES] = store
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/files", create_file)
        app.router.add_get(f"{prefix}/files", list_files)
        app.router.add_get(prefix + "/files/{file_id}", get_file)
        app.router.add_delete(prefix + "/files/{file_id}", delete_file)
        app.router.add_get(prefix + "/files/{file_id}/content", file_content)
        app.router.add_post(f"{prefix}/batches", create_batch)
        app.router.add_get(f"{prefix}/batches", list_batches)
        app.router.add_get(prefix + "/batches/{batch_id}", get_batch)
        app.router.add_post(prefix + "/batches/{batch_id}/cancel", cancel_batch)
