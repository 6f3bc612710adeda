"""The config server's transport: one gRPC/TLS server hosting ConfigDiscovery, UsageReporting,
Allowances and Peers (``settings.config_addr``, ``:14100``).

Every call is authenticated first (``auth.py``: bearer token -> TokenReview -> :class:`Identity`),
and what the caller says is checked against that identity (``guard.py``: malformed protobuf, foreign
sidecar ids or namespaces, impossible numbers); after that this module only moves messages:
discovery requests to the hub (``hub.py``), responses from the session's queue to the wire, usage
batches and lease calls to the budget service (``budgets/``) when this replica leads and to the
leader (``forward.py``) when it does not, acks back; peer sync reports into ``peers.py``'s book.
Refusals map onto gRPC statuses: UNAUTHENTICATED (no or bad token), PERMISSION_DENIED (claims that
disagree with the token, a token without a pod), UNAVAILABLE (the API server could not review the
token), INVALID_ARGUMENT (``guard.py``), RESOURCE_EXHAUSTED (a message over
``guard.MAX_MESSAGE_BYTES``, refused by gRPC itself).

TLS: the serving pair can change while the server runs (``tls_reload.py`` watches the files;
:meth:`ConfigServer.update_tls`). The server uses gRPC's dynamic credentials, whose fetcher gRPC calls
at every new handshake: new connections get the new certificate, streams already open keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import grpc

from llmroute_proto.v1 import allowance_pb2 as apb
from llmroute_proto.v1 import allowance_pb2_grpc as apb_grpc
from llmroute_proto.v1 import discovery_pb2 as dpb
from llmroute_proto.v1 import discovery_pb2_grpc as dpb_grpc
from llmroute_proto.v1 import peers_pb2 as ppb
from llmroute_proto.v1 import peers_pb2_grpc as ppb_grpc
from llmroute_proto.v1 import usage_pb2 as upb
from llmroute_proto.v1 import usage_pb2_grpc as upb_grpc

from ..settings import OperatorSettings
from .auth import AuthError, Identity, IdentityApi, TokenAuthenticator, authorize, bearer_token
from .forward import LeaderLink, NoLeader, forwarded, forwarding_metadata
from .guard import MAX_MESSAGE_BYTES, ParseGuard, Refusal, check_lease_call, check_usage_batch
from .hub import ConfigHub
from .peers import PeerSyncBook

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


class _Certificates:
    """The serving pair for new handshakes. gRPC calls :meth:`fetch` from its own threads, at every
    handshake: it answers None (no change) until :meth:`update` stored a new pair."""

    def __init__(self, tls: ServerTls) -> None:
        self._lock = threading.Lock()
        self._pending: Any = None
        self.initial = _configuration(tls)

    def update(self, tls: ServerTls) -> None:
        configuration = _configuration(tls)
        with self._lock:
            self._pending = configuration

    def fetch(self) -> Any:
        with self._lock:
            pending, self._pending = self._pending, None
        return pending


def _configuration(tls: ServerTls) -> Any:
    return grpc.ssl_server_certificate_configuration([(tls.key_pem, tls.cert_pem)])


class _Authenticated:
    """Shared by the services: authenticate a call or abort it; refuse what ``guard.py`` refuses."""

    _service = ""  # as metrics name it

    def __init__(self, authenticator: TokenAuthenticator, observer: ServerObserver) -> None:
        self._authenticator = authenticator
        self._observer = observer

    async def identity(self, context: Context) -> Identity:
        try:
            token = bearer_token(context.invocation_metadata())
            return await self._authenticator.authenticate(token)
        except AuthError as exc:
            await self._refuse(context, _CODES[exc.code], exc.message)
        except Exception as exc:
            log.warning("TokenReview failed: %s", exc)
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"cannot verify the token now: {exc}")

    async def _refuse(self, context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
        """Abort a call whose caller is at fault (counted by service and status)."""
        self._observer.refused(self._service, code.name)
        await _abort(context, code, message)

    async def _refusal(self, context: Context, refusal: Refusal) -> NoReturn:
        log.info("refused a call of %s: %s", context.peer(), refusal.message)
        await self._refuse(context, getattr(grpc.StatusCode, refusal.code), refusal.message)


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


async def _checked(
    requests: AsyncIterator[upb.UsageBatch], identity: Identity, sidecar_id: str
) -> AsyncIterator[upb.UsageBatch]:
    """The rest of a usage stream, each batch checked (``guard.Refusal`` ends the stream)."""
    async for batch in requests:
        check_usage_batch(identity, batch, sidecar_id=sidecar_id)
        yield batch


class _Discovery(dpb_grpc.ConfigDiscoveryServicer, _Authenticated):
    _service = "config"

    def __init__(self, authenticator: TokenAuthenticator, hub: ConfigHub, observer: ServerObserver) -> None:
        _Authenticated.__init__(self, authenticator, observer)
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
            await self._refuse(context, _CODES[exc.code], exc.message)
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
                await self._refuse(context, _CODES[failure.code], failure.message)
            elif isinstance(failure, grpc.aio.AbortError):
                raise failure  # the reader refused a malformed request (guard.ParseGuard)
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


class _Leadership(Protocol):
    """What the transport needs of ``leadership.Leadership``."""

    identity: str
    leader: bool
    leader_address: str
    term: int

    async def wait_change(self, term: int) -> int: ...


class _AlwaysLeader:
    """A single replica (``--standalone``, tests): it always leads."""

    identity = "standalone"
    leader = True
    leader_address = ""
    term = 0

    async def wait_change(self, term: int) -> int:
        await asyncio.Event().wait()
        return term


class _Spend(_Authenticated):
    """Shared by the usage and allowance services: serve here when leading, else forward."""

    def __init__(
        self,
        authenticator: TokenAuthenticator,
        budgets: BudgetService,
        leadership: _Leadership,
        link: LeaderLink | None,
        observer: ServerObserver,
    ) -> None:
        _Authenticated.__init__(self, authenticator, observer)
        self._budgets = budgets
        self._leadership = leadership
        self._link = link

    async def _route(self, context: Context) -> tuple[Identity, Any]:
        """The verified caller, and the leader's channel (None: serve here)."""
        identity = await self.identity(context)
        if self._leadership.leader:
            return identity, None
        metadata = context.invocation_metadata()
        if forwarded(metadata):
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "this replica no longer leads; retry")
        if self._link is None:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "this replica does not lead; retry")
        try:
            return identity, self._link.channel()
        except NoLeader as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))

    def _metadata(self, context: Context) -> tuple[tuple[str, str], ...]:
        return forwarding_metadata(context.invocation_metadata(), via=self._leadership.identity)


class _Usage(upb_grpc.UsageReportingServicer, _Spend):
    _service = "usage"

    def __init__(self, *args: Any) -> None:
        _Spend.__init__(self, *args)
        # Streams served here: [identity, sidecar id, last ack sent] (flush_acks reads them).
        self.streams: dict[int, list[Any]] = {}
        self.progress = asyncio.Event()  # set whenever one of them sent an ack or ended

    def _progressed(self) -> None:
        self.progress.set()
        self.progress = asyncio.Event()

    def acks_pending(self) -> int:
        return sum(
            1 for identity, sidecar, sent in self.streams.values()
            if self._budgets.acked_sequence(identity, sidecar) > sent
        )  # fmt: skip

    async def ReportUsage(
        self, request_iterator: AsyncIterator[upb.UsageBatch], context: Context
    ) -> AsyncIterator[upb.UsageAck]:
        identity, channel = await self._route(context)
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        sidecar_id = first.sidecar_id
        try:
            check_usage_batch(identity, first, sidecar_id=sidecar_id)
        except Refusal as refusal:
            await self._refusal(context, refusal)
        requests = _checked(requests, identity, sidecar_id)
        term = self._leadership.term
        moved = asyncio.ensure_future(self._leadership.wait_change(term))
        try:
            if channel is None:
                async for ack in self._serve(first, requests, identity, context, moved):
                    yield ack
            else:
                async for ack in self._forward(first, requests, channel, context, moved):
                    yield ack
        finally:
            moved.cancel()
        if moved.done() and not moved.cancelled():
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "the operator leader changed; reconnect")

    async def _serve(
        self,
        first: upb.UsageBatch,
        requests: AsyncIterator[upb.UsageBatch],
        identity: Identity,
        context: Context,
        moved: asyncio.Future[int],
    ) -> AsyncIterator[upb.UsageAck]:
        sidecar_id = first.sidecar_id
        reader = asyncio.create_task(self._read(first, requests, identity))
        sent = -1
        entry = self.streams[id(reader)] = [identity, sidecar_id, 0]
        try:
            while not moved.done():
                acked = self._budgets.acked_sequence(identity, sidecar_id)
                if acked != sent and acked > 0:
                    sent = acked
                    yield upb.UsageAck(acked_sequence=acked)
                    entry[2] = acked
                    self._progressed()
                    continue
                wait = asyncio.ensure_future(self._budgets.wait_acked(identity, sidecar_id, above=acked))
                try:
                    pending: set[asyncio.Future[Any]] = {wait, reader, moved}
                    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wait.cancel()
                if reader in done:
                    from ..budgets.service import BudgetError  # here: budgets imports this package

                    failure = reader.exception()
                    if isinstance(failure, Refusal):
                        await self._refusal(context, failure)
                    if isinstance(failure, grpc.aio.AbortError):
                        raise failure  # guard.ParseGuard refused a malformed batch
                    if isinstance(failure, BudgetError):
                        await _abort(context, getattr(grpc.StatusCode, failure.code), failure.message)
                    if failure is not None:
                        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(failure))
                    # The sidecar closed its side; acks of what it sent may still be on their way.
                    if wait not in done:
                        break
        finally:
            reader.cancel()
            self.streams.pop(id(reader), None)
            self._progressed()

    async def _read(
        self, first: upb.UsageBatch, requests: AsyncIterator[upb.UsageBatch], identity: Identity
    ) -> None:
        await self._budgets.report_usage(identity, first)
        async for batch in requests:
            await self._budgets.report_usage(identity, batch)

    async def _forward(
        self,
        first: upb.UsageBatch,
        requests: AsyncIterator[upb.UsageBatch],
        channel: Any,
        context: Context,
        moved: asyncio.Future[int],
    ) -> AsyncIterator[upb.UsageAck]:
        call = upb_grpc.UsageReportingStub(channel).ReportUsage(metadata=self._metadata(context))

        async def pump() -> None:
            await call.write(first)
            async for batch in requests:
                await call.write(batch)
            await call.done_writing()

        pumper = asyncio.create_task(pump())
        self._observer.forwarded("usage", "ok")
        watched: set[asyncio.Future[Any]] = {pumper, moved}
        # One read in flight at a time, never cancelled mid-way (that would cancel the whole call).
        read: asyncio.Future[Any] | None = None
        try:
            while True:
                if read is None:
                    read = asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait({read, *watched}, return_when=asyncio.FIRST_COMPLETED)
                if pumper in done:
                    watched.discard(pumper)  # the sidecar finished writing; acks may still come
                    failure = pumper.exception()
                    if failure is not None:
                        if isinstance(failure, Refusal):
                            await self._refusal(context, failure)
                        if isinstance(failure, grpc.aio.AbortError):
                            raise failure
                        self._observer.forwarded("usage", "error")
                        await _abort(
                            context, grpc.StatusCode.UNAVAILABLE, f"forwarding to the leader: {failure}"
                        )
                if moved in done:
                    return
                if read not in done:
                    continue
                finished, read = read, None
                try:
                    ack = finished.result()
                except grpc.aio.AioRpcError as exc:
                    self._observer.forwarded("usage", "error")
                    await _abort(context, exc.code(), f"leader: {exc.details()}")
                if ack is grpc.aio.EOF:
                    return
                yield ack
        finally:
            pumper.cancel()
            call.cancel()
            if read is not None:
                read.cancel()


class _Allowances(apb_grpc.AllowancesServicer, _Spend):
    _service = "allowance"

    async def _admit(
        self, context: Context, request: apb.LeaseRequest | apb.RenewRequest | apb.ReturnRequest
    ) -> tuple[Identity, Any]:
        identity, channel = await self._route(context)
        try:
            check_lease_call(identity, request)
        except Refusal as refusal:
            await self._refusal(context, refusal)
        return identity, channel

    async def Lease(self, request: apb.LeaseRequest, context: Context) -> apb.LeaseGrant:
        identity, channel = await self._admit(context, request)
        if channel is not None:
            answer: apb.LeaseGrant = await self._forward(
                context, apb_grpc.AllowancesStub(channel).Lease, request, "lease"
            )
            return answer
        return await self._call(context, lambda: self._budgets.lease(identity, request))

    async def Renew(self, request: apb.RenewRequest, context: Context) -> apb.LeaseGrant:
        identity, channel = await self._admit(context, request)
        if channel is not None:
            answer: apb.LeaseGrant = await self._forward(
                context, apb_grpc.AllowancesStub(channel).Renew, request, "renew"
            )
            return answer
        return await self._call(context, lambda: self._budgets.renew(identity, request))

    async def Return(self, request: apb.ReturnRequest, context: Context) -> apb.ReturnResponse:
        identity, channel = await self._admit(context, request)
        if channel is not None:
            answer: apb.ReturnResponse = await self._forward(
                context, apb_grpc.AllowancesStub(channel).Return, request, "return"
            )
            return answer
        return await self._call(context, lambda: self._budgets.return_lease(identity, request))

    async def _forward(self, context: Context, method: Any, request: Any, name: str) -> Any:
        remaining = context.time_remaining()
        timeout = min(remaining, 5.0) if isinstance(remaining, int | float) else 5.0
        try:
            answer = await method(request, metadata=self._metadata(context), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            self._observer.forwarded(name, "error")
            await _abort(context, exc.code(), f"leader: {exc.details()}")
        self._observer.forwarded(name, "ok")
        return answer

    async def _call(self, context: Context, call: Callable[[], _T]) -> _T:
        from ..budgets.service import BudgetError  # here: budgets imports this package

        try:
            return call()
        except BudgetError as exc:
            await _abort(context, getattr(grpc.StatusCode, exc.code), exc.message)


class _Peers(ppb_grpc.PeersServicer, _Authenticated):
    """The leader's side of ``peers.py``: only the operator's own Pods may report."""

    _service = "peers"

    def __init__(
        self,
        authenticator: TokenAuthenticator,
        book: PeerSyncBook | None,
        leadership: _Leadership,
        peer: tuple[str, str],
        observer: ServerObserver,
    ) -> None:
        _Authenticated.__init__(self, authenticator, observer)
        self._book = book
        self._leadership = leadership
        self._peer = peer

    async def ReportSync(self, request: ppb.SyncReport, context: Context) -> ppb.SyncReportAck:
        identity = await self.identity(context)
        if (identity.namespace, identity.service_account) != self._peer:
            await self._refuse(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} is not an operator replica (expected ServiceAccount {self._peer[0]}/{self._peer[1]})",
            )
        if self._book is None or not self._leadership.leader:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, "this replica does not lead")
        if not request.replica:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "SyncReport.replica is required")
        self._book.accept(request)
        return ppb.SyncReportAck()


class ServerObserver(Protocol):
    """Metrics hooks (``metrics.OperatorMetrics``): forwarded spend calls, refused calls."""

    def forwarded(self, call: str, result: str) -> None: ...
    def refused(self, call: str, code: str) -> None: ...


class _NoObserver:
    def forwarded(self, call: str, result: str) -> None:
        pass

    def refused(self, call: str, code: str) -> None:
        pass


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
        leadership: _Leadership | None = None,
        link: LeaderLink | None = None,
        peers: PeerSyncBook | None = None,
        observer: ServerObserver | None = None,
    ) -> None:
        if tls is None:
            if settings.tls_cert is None or settings.tls_key is None:
                raise ValueError("the config server needs TLS: pass tls= or set --tls-cert/--tls-key")
            tls = ServerTls.from_files(settings.tls_cert, settings.tls_key)
        self._certificates = _Certificates(tls)
        self._addr = addr or settings.config_addr
        self.authenticator = authenticator or TokenAuthenticator(api=kube)
        self._hub = hub
        self._budgets = budgets
        self._leadership: _Leadership = leadership or _AlwaysLeader()
        self._link = link
        self._peers = peers
        self._peer = (settings.lease_namespace, settings.peer_service_account)
        self._observer: ServerObserver = observer or _NoObserver()
        self._server: Any = None
        self._usage: _Usage | None = None
        self.port = 0

    async def start(self) -> int:
        server = grpc.aio.server(
            interceptors=[ParseGuard(self._observer)],
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        discovery = _Discovery(self.authenticator, self._hub, self._observer)
        dpb_grpc.add_ConfigDiscoveryServicer_to_server(discovery, server)
        spend = (self.authenticator, self._budgets, self._leadership, self._link, self._observer)
        self._usage = _Usage(*spend)
        upb_grpc.add_UsageReportingServicer_to_server(self._usage, server)
        apb_grpc.add_AllowancesServicer_to_server(_Allowances(*spend), server)
        ppb_grpc.add_PeersServicer_to_server(
            _Peers(self.authenticator, self._peers, self._leadership, self._peer, self._observer), server
        )
        certificates = self._certificates
        credentials = grpc.dynamic_ssl_server_credentials(certificates.initial, certificates.fetch)
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

    def update_tls(self, tls: ServerTls) -> None:
        """Serve ``tls`` from the next handshake on; connections already open keep their certificate."""
        self._certificates.update(tls)

    async def flush_acks(self) -> None:
        """Wait until every usage stream served here has sent its sidecar the latest ack."""
        usage = self._usage
        while usage is not None and usage.acks_pending():
            # The streams wake on the budget service's ack notification; wait for them to write.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(usage.progress.wait(), timeout=0.05)

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.stop(grace)
            self._server = None
