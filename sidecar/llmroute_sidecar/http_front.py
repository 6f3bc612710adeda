"""The app-facing OpenAI-compatible HTTP server (``127.0.0.1:14080`` by default).

Routes: ``POST /v1/chat/completions`` (JSON or SSE), ``POST /v1/embeddings``, ``GET /v1/models``, and
the Files and Batches endpoints of ``batch/http.py``, the conversations of ``memory/http.py`` and the
experiment feedback of ``experiment/http.py``.
Everything the app can send, however malformed, gets an OpenAI error object with the right status
and never a stack trace (the middleware catches what the handlers do not). A stream that breaks
after its first byte ends with an explicit ``data: {"error": ...}`` event and no ``[DONE]``, which the
OpenAI SDKs raise as an error, so a cut answer never looks complete. Neighbours: ``service.py`` does
the routing; ``openai_api/`` validates bodies and hint headers, and shapes errors; ``web/`` is the
HTTP server underneath (httptools' parser, aiohttp's shapes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from . import web
from .attempts import StreamBroken
from .batch.http import add_batch_routes
from .batch.store import BatchStore
from .experiment.http import add_feedback_routes
from .ids import new_id
from .memory.http import add_memory_routes
from .openai_api.errors import ApiError
from .openai_api.headers import check_headers
from .openai_api.responses import api_error_response, render_http_error
from .openai_api.validate import parse_chat, parse_embeddings, parse_json
from .service import Hints, RouteMeta, RouterService
from .tracing import RequestSpan

__all__ = ["DEFAULT_MAX_BODY", "make_http_app"]

log = logging.getLogger(__name__)
DEFAULT_MAX_BODY = 16 * 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE: web.AppKey[RouterService] = web.AppKey("service", RouterService)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)


async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    in_flight = request.app[SERVICE].metrics.in_flight
    in_flight.inc()
    try:
        return await handler(request)
    except ApiError as exc:
        return api_error_response(exc)
    except web.HTTPError as exc:  # 404, 405 (with Allow), 413, a malformed body
        return render_http_error(exc)
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return api_error_response(
            ApiError(500, "internal error in the llmroute sidecar; see its logs", code="internal_error")
        )
    finally:
        in_flight.dec()


def request_id(request: web.Request) -> str:
    """This request's id: the app's ``x-request-id`` when it is a sane token, else a new one. It names
    the usage and audit records and comes back in the response's ``x-request-id``, as OpenAI's does
    (the SDK shows it as ``response._request_id``)."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        sent = request.headers.get("x-request-id", "")
        ok = 0 < len(sent) <= 200 and sent.isascii() and sent.isprintable()
        rid = request[REQUEST_ID] = sent if ok else new_id()
    return str(rid)


def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-request-id"] = request_id(request)


def _render_refusal(error: web.HTTPError) -> web.Response:
    """What the server refuses before a request exists (a malformed or oversized head) is an
    OpenAI error too, and carries a request id like every other answer (where a request exists,
    the response hook above replaces it with the request's)."""
    response = render_http_error(error)
    response.headers.setdefault("x-request-id", new_id())
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = parse_chat(parse_json(await request.read()))
    check_headers(request.headers)
    service = request.app[SERVICE]
    hints = Hints.from_headers(request.headers, body, request_id=request_id(request))
    with service.tracing.request(request.headers, "chat", str(body["model"])) as span:
        if body.get("stream"):
            return await _stream(request, service, body, hints, span)
        response, meta = await service.chat(body, hints)
        _traced(span, response, meta)
        return web.Response(
            body=orjson.dumps(response), content_type="application/json", headers=meta.headers()
        )


def _traced(span: RequestSpan, response: dict[str, Any], meta: RouteMeta) -> None:
    """What the request span says of an answered request (GenAI conventions and llmroute's own)."""
    if span.span is None:
        return
    usage = response.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    span.set(
        {
            "gen_ai.response.model": response.get("model")
            if isinstance(response.get("model"), str)
            else None,
            "gen_ai.response.id": response.get("id") if isinstance(response.get("id"), str) else None,
            "gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
            "gen_ai.usage.output_tokens": usage.get("completion_tokens"),
            "llmroute.backend": meta.backend,
            "cloud.region": meta.region,
            "llmroute.attempts": meta.attempts,
            "llmroute.cache": meta.cache,
            "llmroute.cost_usd": meta.cost_usd,
        }
    )
    if meta.decision is not None:
        span.set({"llmroute.route": meta.decision.candidates[0].route if meta.decision.candidates else None})
    span.decided(meta.decision)


async def _stream(
    request: web.Request, service: RouterService, body: dict[str, object], hints: Hints, span: RequestSpan
) -> web.StreamResponse:
    started = time.monotonic()
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    call = await service.chat_stream(body, hints, include_usage=include_usage)
    response = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache", **call.headers()}
    )
    model = call.request.entry.name
    label = "ok"
    try:
        await response.prepare(request)
        try:
            async for chunk in call.chunks():
                await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        except StreamBroken as exc:
            label = "stream_error"
            log.warning("model %s: %s", model, exc)
            service.metrics.stream_errors.labels(exc.backend, exc.error.kind.value).inc()
            error = ApiError(
                502,
                f"the upstream stream from {exc.backend} broke: {exc.error.message}",
                code=f"upstream_{exc.error.kind.value}",
            )
            await response.write(b"data: " + error.body() + b"\n\n")
            return response
        # The cost is known only now: an SSE comment (ignored by SSE clients) carries it before [DONE].
        cost = await asyncio.shield(call.finish(label))
        usage = call.usage or {}
        span.set(
            {
                "llmroute.backend": call.backend.name if call.backend is not None else "",
                "gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
                "gen_ai.usage.output_tokens": usage.get("completion_tokens"),
                "llmroute.attempts": call.attempts,
                "llmroute.cost_usd": cost,
            }
        )
        span.decided(call.request.decision)
        await response.write(b": x-llmroute-cost-usd=" + f"{cost or 0.0:.6f}".encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
    except (ConnectionResetError, OSError, asyncio.CancelledError):
        label = "client_disconnected"
        log.info("model %s: the app disconnected mid-stream; upstream call cancelled", model)
        raise
    finally:
        call.close()
        # Shielded: an app that went away must not take the stream's usage record with it.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(call.finish(label))
        service.metrics.request_seconds.labels(model, "true").observe(time.monotonic() - started)


async def embeddings(request: web.Request) -> web.Response:
    body = parse_embeddings(parse_json(await request.read()))
    check_headers(request.headers)
    service = request.app[SERVICE]
    hints = Hints.from_headers(request.headers, body, request_id=request_id(request))
    with service.tracing.request(request.headers, "embeddings", str(body["model"])) as span:
        response, meta = await service.embeddings(body, hints)
        _traced(span, response, meta)
        return web.Response(
            body=orjson.dumps(response), content_type="application/json", headers=meta.headers()
        )


async def models(request: web.Request) -> web.Response:
    data = request.app[SERVICE].list_models()
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


async def model(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    for item in request.app[SERVICE].list_models():
        if item["id"] == name:
            return web.Response(body=orjson.dumps(item), content_type="application/json")
    raise ApiError(404, f"The model {name!r} does not exist here", param="model", code="model_not_found")


# The body limit holds in Request.read() (web/request.py): from Content-Length before a byte is read,
# and while a chunked body arrives; so the handlers read bodies directly.
def make_http_app(
    service: RouterService, *, max_body: int = DEFAULT_MAX_BODY, batches: BatchStore | None = None
) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=max_body, error_renderer=_render_refusal)
    app[SERVICE] = service
    app.on_response_prepare.append(_echo_request_id)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{name:.+}", model)
    add_batch_routes(app, batches)
    add_memory_routes(app, service.memory, service.namespace)
    add_feedback_routes(
        app,
        responses=service.policies.responses,
        usage=service.usage,
        metrics=service.metrics,
        namespace=service.namespace,
    )
    return app
