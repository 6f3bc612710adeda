"""The aiohttp application of one fake: routes of a protocol behind a recording, fault-applying layer.

Neighbours: ``server`` runs what :func:`make_app` builds; ``protocol`` defines what the protocol
modules provide; ``faults`` decides each request's knobs; ``transport`` does resets.

Per request, in this order (the order a real provider's front end would fail in):
record it; wait ``latency_ms``; ``reset`` or ``hang`` the connection; authenticate; answer the
``status`` knob with the provider's error; run the protocol handler. Errors a handler raises as
:class:`ApiError`, and aiohttp's own 404/405, are rendered in the provider's error shape too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from .faults import FAULT_HEADER, FaultSpec, FaultSyntaxError
from .protocol import EXCHANGE, STATE, ApiError, Exchange, FakeState, ProviderProtocol, RecordedRequest
from .transport import reset_connection

__all__ = ["make_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Big enough for long prompts and batch embeddings; real providers accept tens of megabytes too.
_MAX_BODY = 64 * 1024 * 1024


def make_app(protocol: ProviderProtocol, state: FakeState) -> web.Application:
    app = web.Application(middlewares=[_fault_middleware(protocol)], client_max_size=_MAX_BODY)
    app[STATE] = state
    app.add_routes(protocol.routes())
    return app


def _fault_middleware(protocol: ProviderProtocol) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = request.app[STATE]
        body = await request.read()
        try:
            faults, bad_spec = state.plan.decide(request.headers.get(FAULT_HEADER)), None
        except FaultSyntaxError as exc:
            faults, bad_spec = FaultSpec(), ApiError(400, str(exc))
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=MultiDictProxy(MultiDict(request.query)),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            faults=faults,
        )
        state.requests.append(record)
        if bad_spec is not None:
            return protocol.error_response(bad_spec)
        request[EXCHANGE] = Exchange(state=state, record=record, faults=faults)

        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.reset:
            return _reset(request)
        if faults.hang:
            # Held until the client gives up (aiohttp then cancels this handler) or the fake stops.
            await state.closing.wait()
            return _reset(request)
        try:
            protocol.authenticate(request)
            if faults.status is not None:
                raise ApiError(faults.status, retry_after=faults.retry_after)
            return await handler(request)
        except ApiError as exc:
            return protocol.error_response(exc)
        except web.HTTPException as exc:
            # The router's 404/405: real providers answer unknown paths in their own shape too.
            if exc.status < 400:
                raise
            return protocol.error_response(ApiError(exc.status))

    return middleware


def _reset(request: web.Request) -> web.StreamResponse:
    reset_connection(request)
    # aiohttp needs a response object; it cannot be written to the aborted transport, and is not.
    return web.Response(status=499)
