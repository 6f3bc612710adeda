"""The config server's transport: one gRPC/TLS server hosting ConfigDiscovery, UsageReporting and
Allowances (``settings.config_addr``, ``:14100``).

Every call is authenticated first (``auth.py``: bearer token -> TokenReview -> :class:`Identity`);
after that this module only moves messages: discovery requests to the hub (``hub.py``), responses
from the session's queue to the wire, usage batches and lease calls to the budget service
(``budgets/``), acks back. Refusals map onto gRPC statuses: UNAUTHENTICATED (no or bad token),
PERMISSION_DENIED (claims that disagree with the token, a token without a pod), UNAVAILABLE (the API
server could not review the token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc

from llmroute_proto.v1 import allowance_pb2 as apb
from llmroute_proto.v1 import allowance_pb2_grpc as apb_grpc
from llmroute_proto.v1 import discovery_pb2 as dpb
from llmroute_proto.v1 import discovery_pb2_grpc as dpb_grpc
from llmroute_proto.v1 import usage_pb2 as upb
from llmroute_proto.v1 import usage_pb2_grpc as upb_grpc

from ..settings import OperatorSettings
from .auth import AuthError, Identity, IdentityApi, TokenAuthenticator, authorize, bearer_token
from .hub import ConfigHub

if TYPE_CHECKING:
    from ..budgets.service import BudgetService

__all__ = ["ConfigServer", "ServerTls"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
Context = Any  # grpc.aio.ServicerContext (grpc ships no type information)
_CODES = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
}


@dataclass(frozen=True)
class ServerTls:
    """PEM serving certificate (chain) and key."""

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_files(cls, cert: Path, key: Path) -> ServerTls:
        return cls(cert_pem=cert.read_bytes(), key_pem=key.read_bytes())


class _Authenticated:
    """Shared by the three services: authenticate a call or abort it."""

    def __init__(self, authenticator: TokenAuthenticator) -> None:
        self._authenticator = authenticator

    async def identity(self, context: Context) -> Identity:
        try:
            token = bearer_token(context.invocation_metadata())
            return await self._authenticator.authenticate(token)
        except AuthError as exc:
            await _abort(context, _CODES[exc.code], exc.message)
        except Exception as exc:
            log.warning("TokenReview failed: %s", exc)
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"cannot verify the token now: {exc}")


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


class _Discovery(dpb_grpc.ConfigDiscoveryServicer, _Authenticated):
    def __init__(self, authenticator: TokenAuthenticator, hub: ConfigHub) -> None:
        _Authenticated.__init__(self, authenticator)
        self._hub = hub

    async def StreamConfig(
        self, request_iterator: AsyncIterator[dpb.ConfigRequest], context: Context
    ) -> AsyncIterator[dpb.ConfigResponse]:
        identity = await self.identity(context)
        requests = aiter(request_iterator)
        try:
            hello = await anext(requests)
        except StopAsyncIteration:
            return
        try:
            authorize(identity, hello.node)
            handle = await self._hub.open(identity, hello)
        except AuthError as exc:
            log.warning("refused sidecar %s: %s", hello.node.id or "?", exc.message)
            await _abort(context, _CODES[exc.code], exc.message)
        except Exception as exc:  # the Pod could not be read: the API server is the problem, not the caller
            log.warning("cannot open a session for %s: %s", identity, exc)
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"cannot look up the pod now: {exc}")
        # Tells the sidecar it was accepted, even when it already runs the current config.
        await context.send_initial_metadata((("x-llmroute-session", handle.session.id),))
        reader = asyncio.create_task(self._read(requests, handle, identity))
        try:
            while True:
                get = asyncio.ensure_future(handle.queue.get())
                try:
                    done, _ = await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    get.cancel()
                if get not in done:
                    break
                yield get.result().response()
            failure = None if reader.cancelled() else reader.exception()
            if isinstance(failure, AuthError):
                await _abort(context, _CODES[failure.code], failure.message)
            elif failure is not None:
                log.warning("config stream of %s failed: %s", identity, failure)
        finally:
            reader.cancel()
            self._hub.close(handle)

    async def _read(
        self, requests: AsyncIterator[dpb.ConfigRequest], handle: Any, identity: Identity
    ) -> None:
        async for request in requests:
            if request.HasField("node"):
                authorize(identity, request.node)  # claims may not change mid-stream either
            self._hub.answer(handle, request)


class _Usage(upb_grpc.UsageReportingServicer, _Authenticated):
    def __init__(self, authenticator: TokenAuthenticator, budgets: BudgetService) -> None:
        _Authenticated.__init__(self, authenticator)
        self._budgets = budgets

    async def ReportUsage(
        self, request_iterator: AsyncIterator[upb.UsageBatch], context: Context
    ) -> AsyncIterator[upb.UsageAck]:
        identity = await self.identity(context)
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        sidecar_id = first.sidecar_id
        if not sidecar_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "UsageBatch.sidecar_id is required")
        reader = asyncio.create_task(self._read(first, requests, identity))
        sent = -1
        try:
            while True:
                acked = self._budgets.acked_sequence(identity, sidecar_id)
                if acked != sent and acked > 0:
                    sent = acked
                    yield upb.UsageAck(acked_sequence=acked)
                    continue
                wait = asyncio.ensure_future(self._budgets.wait_acked(identity, sidecar_id, above=acked))
                try:
                    done, _ = await asyncio.wait({wait, reader}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wait.cancel()
                if wait not in done:
                    if reader.exception() is not None:
                        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(reader.exception()))
                    break
        finally:
            reader.cancel()

    async def _read(
        self, first: upb.UsageBatch, requests: AsyncIterator[upb.UsageBatch], identity: Identity
    ) -> None:
        await self._budgets.report_usage(identity, first)
        async for batch in requests:
            if batch.sidecar_id != first.sidecar_id:
                raise ValueError("a usage stream carries one sidecar_id")
            await self._budgets.report_usage(identity, batch)


class _Allowances(apb_grpc.AllowancesServicer, _Authenticated):
    def __init__(self, authenticator: TokenAuthenticator, budgets: BudgetService) -> None:
        _Authenticated.__init__(self, authenticator)
        self._budgets = budgets

    async def Lease(self, request: apb.LeaseRequest, context: Context) -> apb.LeaseGrant:
        identity = await self.identity(context)
        return await self._call(context, lambda: self._budgets.lease(identity, request))

    async def Renew(self, request: apb.RenewRequest, context: Context) -> apb.LeaseGrant:
        identity = await self.identity(context)
        return await self._call(context, lambda: self._budgets.renew(identity, request))

    async def Return(self, request: apb.ReturnRequest, context: Context) -> apb.ReturnResponse:
        identity = await self.identity(context)
        return await self._call(context, lambda: self._budgets.return_lease(identity, request))

    async def _call(self, context: Context, call: Callable[[], _T]) -> _T:
        from ..budgets.service import BudgetError

        try:
            return call()
        except BudgetError as exc:
            await _abort(context, getattr(grpc.StatusCode, exc.code), exc.message)


class ConfigServer:
    """The gRPC server; ``start()`` binds and returns the port, ``stop(grace)`` drains."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        hub: ConfigHub,
        budgets: BudgetService,
        kube: IdentityApi,
        tls: ServerTls | None = None,
        addr: str | None = None,
        authenticator: TokenAuthenticator | None = None,
    ) -> None:
        if tls is None:
            if settings.tls_cert is None or settings.tls_key is None:
                raise ValueError("the config server needs TLS: pass tls= or set --tls-cert/--tls-key")
            tls = ServerTls.from_files(settings.tls_cert, settings.tls_key)
        self._tls = tls
        self._addr = addr or settings.config_addr
        self.authenticator = authenticator or TokenAuthenticator(api=kube)
        self._hub = hub
        self._budgets = budgets
        self._server: Any = None
        self.port = 0

    async def start(self) -> int:
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        dpb_grpc.add_ConfigDiscoveryServicer_to_server(_Discovery(self.authenticator, self._hub), server)
        upb_grpc.add_UsageReportingServicer_to_server(_Usage(self.authenticator, self._budgets), server)
        apb_grpc.add_AllowancesServicer_to_server(_Allowances(self.authenticator, self._budgets), server)
        credentials = grpc.ssl_server_credentials([(self._tls.key_pem, self._tls.cert_pem)])
        host, _, port = self._addr.rpartition(":")
        target = f"{host or '[::]'}:{port}"
        try:
            self.port = int(server.add_secure_port(target, credentials))
        except RuntimeError as exc:
            raise OSError(f"cannot bind the config server to {self._addr}: {exc}") from None
        if self.port == 0:
            raise OSError(f"cannot bind the config server to {self._addr}")
        await server.start()
        self._server = server
        log.info("config server listening on %s (port %d, TLS)", self._addr, self.port)
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.stop(grace)
            self._server = None
