"""The app-facing gRPC server, ``llmroute.v1.Router`` (``127.0.0.1:14081`` by default).

The twin of ``http_front.py``: the same :class:`RouterService` behind it, the same validation
(``openai_api/validate.py`` on the OpenAI dict that ``grpc_convert.py`` builds from the request), the
same accounting. Every failure is a gRPC status with a readable message and never a traceback:
an :class:`ApiError` maps by its HTTP status (400 INVALID_ARGUMENT, 404 NOT_FOUND, 429
RESOURCE_EXHAUSTED, 503 UNAVAILABLE, ...), with its ``code`` and ``param`` in the trailing metadata
``x-llmroute-error-code`` / ``x-llmroute-error-param`` (and ``retry-after`` when known). A stream that
breaks after its first chunk ends with UNAVAILABLE (DEADLINE_EXCEEDED for the total timeout), never
a clean end; a client that cancels a stream cancels the upstream call. The server also runs the
standard health service (SERVING once a config is held) and server reflection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from llmroute_proto.v1 import router_pb2 as pb

from .adapters.errors import ErrorKind
from .attempts import StreamBroken
from .grpc_convert import (
    chat_body,
    chat_chunk,
    chat_response,
    embed_body,
    embed_response,
    hints_for,
    list_models_response,
    route_info,
    token_usage,
)
from .http_front import DEFAULT_MAX_BODY
from .openai_api.errors import ApiError
from .openai_api.validate import parse_chat, parse_embeddings
from .service import Hints, RouteMeta, RouterService
from .stream_call import StreamCall

__all__ = ["ROUTER_SERVICE", "GrpcFront", "start_grpc", "status_code_for", "stop_grpc"]

log = logging.getLogger(__name__)
ROUTER_SERVICE: str = pb.DESCRIPTOR.services_by_name["Router"].full_name
_INTERNAL = "internal error in the llmroute sidecar; see its logs"
_T = TypeVar("_T")
Json = dict[str, Any]

# HTTP status of an ApiError -> gRPC status, as router.proto documents (google.rpc.Code's mapping).
_STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    402: grpc.StatusCode.RESOURCE_EXHAUSTED,  # budget
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code_for(error: ApiError) -> Any:
    """The ``grpc.StatusCode`` answering ``error``; unlisted 4xx are INVALID_ARGUMENT, 5xx INTERNAL."""
    code = _STATUS_CODES.get(error.status)
    if code is not None:
        return code
    return grpc.StatusCode.INVALID_ARGUMENT if error.status < 500 else grpc.StatusCode.INTERNAL


class Context(Protocol):
    """The part of ``grpc.aio.ServicerContext`` the handlers use (grpc ships no types here)."""

    async def abort(
        self, code: Any, details: str = "", trailing_metadata: tuple[tuple[str, str], ...] = ()
    ) -> NoReturn: ...

    async def write(self, message: Any) -> None: ...

    def invocation_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...


def _metadata(context: Context) -> dict[str, str]:
    """Text metadata as a lowercase-keyed dict (x-llmroute-* hints, x-request-id)."""
    return {
        key.lower(): value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


async def _abort(context: Context, error: ApiError) -> NoReturn:
    trailing = [(key.lower(), value) for key, value in error.headers.items()]
    if error.code:
        trailing.append(("x-llmroute-error-code", error.code))
    if error.param:
        trailing.append(("x-llmroute-error-param", error.param))
    await context.abort(status_code_for(error), error.message, tuple(trailing))


class RouterServicer:
    """``llmroute.v1.Router`` over a :class:`RouterService`: wire format only, no routing."""

    def __init__(self, service: RouterService) -> None:
        self._service = service

    async def _guard(self, context: Context, method: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call``; an ApiError becomes its status, anything else INTERNAL (logged, not sent)."""
        in_flight = self._service.metrics.in_flight
        in_flight.inc()
        try:
            return await call()
        except ApiError as exc:
            error = exc
        except Exception:
            log.exception("unhandled error in %s", method)
            error = ApiError(500, _INTERNAL, code="internal_error")
        finally:
            in_flight.dec()
        await _abort(context, error)

    async def Chat(self, request: pb.ChatRequest, context: Context) -> pb.ChatResponse:
        async def call() -> pb.ChatResponse:
            body = parse_chat(chat_body(request, stream=False))
            response, meta = await self._service.chat(body, self._hints(request, context))
            return chat_response(response, meta)

        return await self._guard(context, "Chat", call)

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        async def call() -> pb.EmbedResponse:
            body = parse_embeddings(embed_body(request))
            hints = hints_for(request.routing, _metadata(context), request.user)
            response, meta = await self._service.embeddings(body, hints)
            return embed_response(response, meta)

        return await self._guard(context, "Embed", call)

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        async def call() -> pb.ListModelsResponse:
            return list_models_response(self._service.store.current)

        return await self._guard(context, "ListModels", call)

    async def ChatStream(self, request: pb.ChatRequest, context: Context) -> None:
        # Written with context.write() rather than as an async generator: a client cancellation then
        # lands in this coroutine, so the `finally` in _relay closes the upstream at once.
        started = time.monotonic()
        hints = self._hints(request, context)

        async def call() -> StreamCall:
            body = parse_chat(chat_body(request, stream=True))
            # gRPC streams always end with usage, so ask the decoder to keep the usage chunk.
            return await self._service.chat_stream(body, hints, include_usage=True)

        stream = await self._guard(context, "ChatStream", call)
        self._service.metrics.in_flight.inc()
        try:
            failure = await self._relay(stream, context, started)
        finally:
            self._service.metrics.in_flight.dec()
        if failure is not None:
            await _abort(context, failure)

    def _hints(self, request: pb.ChatRequest, context: Context) -> Hints:
        return hints_for(request.routing, _metadata(context), request.user)

    async def _relay(self, stream: StreamCall, context: Context, started: float) -> ApiError | None:
        """Write the stream's chunks; returns the error to end with when it broke mid-way."""
        service = self._service
        model = stream.request.entry.name
        meta = service._meta(stream.request, stream.backend, stream.attempts, None)
        label, failure = "ok", None
        try:
            writer = _ChunkWriter(context, meta)
            async for chunk in stream.chunks():
                await writer.add(chunk)
            # Account before the last chunk goes out: it carries the cost.
            meta.cost_usd = await asyncio.shield(stream.finish("ok"))
            await writer.finish(stream.usage)
        except StreamBroken as exc:
            label = "stream_error"
            log.warning("model %s: %s", model, exc)
            service.metrics.stream_errors.labels(exc.backend, exc.error.kind.value).inc()
            failure = ApiError(
                504 if exc.error.kind == ErrorKind.TIMEOUT else 503,
                f"the upstream stream from {exc.backend} broke: {exc.error.message}",
                code=f"upstream_{exc.error.kind.value}",
            )
        except asyncio.CancelledError:
            label = "client_disconnected"
            log.info("model %s: the app cancelled the stream; upstream call cancelled", model)
            raise
        except Exception:
            label = "error"
            log.exception("model %s: relaying the stream failed", model)
            failure = ApiError(500, _INTERNAL, code="internal_error")
        finally:
            stream.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(stream.finish(label))
            service.metrics.request_seconds.labels(model, "true").observe(time.monotonic() - started)
        return failure


@dataclass
class _ChunkWriter:
    """Writes chunks as they come, RouteInfo on the first; holds back a usage chunk for the end.

    The usage chunk is the last one a provider sends, and the last ChatChunk must carry the complete
    RouteInfo (with cost), known only once usage is. Holding just that chunk adds no latency to
    content. A provider that reports usage on every chunk has each held one flushed by the next.
    """

    context: Context
    meta: RouteMeta
    held: Json | None = None
    last: Json = field(default_factory=dict)
    sent: bool = False

    async def add(self, chunk: Json) -> None:
        if self.held is not None:
            await self._write(chat_chunk(self.held), strip_usage=True)
            self.held = None
        self.last = chunk
        if chunk.get("usage"):
            self.held = chunk
        else:
            await self._write(chat_chunk(chunk))

    async def finish(self, usage: Json | None) -> None:
        if self.held is not None:
            message = chat_chunk(self.held)
        else:
            message = pb.ChatChunk(id=str(self.last.get("id") or ""), model=str(self.last.get("model") or ""))
            created = self.last.get("created")
            if isinstance(created, int):
                message.created = created
        if not message.HasField("usage") and (reported := token_usage(usage)) is not None:
            message.usage.CopyFrom(reported)
        message.route.CopyFrom(route_info(self.meta))
        await self.context.write(message)

    async def _write(self, message: pb.ChatChunk, *, strip_usage: bool = False) -> None:
        if strip_usage:
            message.ClearField("usage")
        if not self.sent:
            message.route.CopyFrom(route_info(self.meta))
            self.sent = True
        await self.context.write(message)


# -- server ------------------------------------------------------------------------------------


def _handlers(servicer: RouterServicer) -> Any:
    """The method handlers of llmroute.v1.Router, bound to ``servicer``."""
    return grpc.method_handlers_generic_handler(
        ROUTER_SERVICE,
        {
            "Chat": grpc.unary_unary_rpc_method_handler(
                servicer.Chat,
                request_deserializer=pb.ChatRequest.FromString,
                response_serializer=pb.ChatResponse.SerializeToString,
            ),
            "ChatStream": grpc.unary_stream_rpc_method_handler(
                servicer.ChatStream,
                request_deserializer=pb.ChatRequest.FromString,
                response_serializer=pb.ChatChunk.SerializeToString,
            ),
            "Embed": grpc.unary_unary_rpc_method_handler(
                servicer.Embed,
                request_deserializer=pb.EmbedRequest.FromString,
                response_serializer=pb.EmbedResponse.SerializeToString,
            ),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                servicer.ListModels,
                request_deserializer=pb.ListModelsRequest.FromString,
                response_serializer=pb.ListModelsResponse.SerializeToString,
            ),
        },
    )


@dataclass
class GrpcFront:
    """A running gRPC front: the ``grpc.aio`` server and its health servicer."""

    server: Any
    health: HealthServicer
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", ROUTER_SERVICE):
            await self.health.set(name, status)


def _grpc_target(addr: str) -> str:
    """``":14081"`` (every interface, as the other --*-addr flags allow) -> ``"[::]:14081"``."""
    return f"[::]{addr}" if addr.startswith(":") else addr


async def start_grpc(
    service: RouterService, addr: str, *, max_message: int = DEFAULT_MAX_BODY
) -> tuple[GrpcFront, int]:
    """Bind and start the gRPC front on ``addr`` (port 0: any free port); returns it and its port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message),
            # Without this, gRPC sets SO_REUSEPORT and a second sidecar would share the port silently.
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((_handlers(RouterServicer(service)),))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (ROUTER_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        port = int(server.add_insecure_port(_grpc_target(addr)))
    except RuntimeError as exc:
        raise OSError(f"cannot bind the gRPC front to {addr}: {exc}") from None
    if port == 0:
        raise OSError(f"cannot bind the gRPC front to {addr}")
    front = GrpcFront(server, health)
    await front.set_serving(service.store.current is not None)
    loop = asyncio.get_running_loop()

    def on_swap(snapshot: object) -> None:
        # Store listeners are plain callbacks, possibly off the loop's thread; the health setter is async.
        def flip() -> None:
            task = loop.create_task(front.set_serving(True))
            front._tasks.add(task)
            task.add_done_callback(front._tasks.discard)

        with contextlib.suppress(RuntimeError):  # the loop is closed: so is the server
            loop.call_soon_threadsafe(flip)

    service.store.on_swap(on_swap)
    await server.start()
    return front, port


async def stop_grpc(front: object, grace: float) -> None:
    """Report NOT_SERVING, then stop, letting in-flight calls finish within ``grace`` seconds."""
    if not isinstance(front, GrpcFront):
        raise TypeError(f"stop_grpc takes what start_grpc returned, not {type(front).__name__}")
    await front.health.enter_graceful_shutdown()
    await front.server.stop(grace)
