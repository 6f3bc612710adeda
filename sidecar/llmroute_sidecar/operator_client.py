"""Operator mode: the sidecar's client of the operator's config server (gRPC over TLS).

``llmroute-sidecar --operator HOST:PORT --token-file F --ca-file F`` runs an :class:`OperatorClient`
beside the servers of ``runtime.py``. On each connection it

- reads the projected ServiceAccount token again (kubelet rotates it) and sends it as
  ``authorization: Bearer`` metadata; the operator derives who we are from it (TokenReview), and the
  ``Node`` we send (pod, namespace, node, region from the downward-API env) are only claims;
- opens ``ConfigDiscovery.StreamConfig`` with the version it runs, applies every pushed config
  through :meth:`ConfigStore.apply` and answers with an ACK, or a NACK carrying the
  :class:`ConfigError` message (the store keeps the last good config);
- opens ``UsageReporting.ReportUsage`` (``usage_reporter.py``) and resends what is unacknowledged;
- lends the channel to the allowance client (``budget/lease_client.py``) for budget leases.

When the operator is gone the sidecar keeps serving its last good config and reconnects with full-jitter
exponential backoff. Nothing here imports kopf or the Kubernetes client.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import grpc

from llmroute_proto.v1 import discovery_pb2 as dpb
from llmroute_proto.v1 import discovery_pb2_grpc as dpb_grpc
from llmroute_proto.v1 import usage_pb2_grpc as upb_grpc

from .config.store import ConfigError, ConfigStore
from .operator_settings import Backoff, ClientSettings, NodeInfo
from .usage import UsageBuffer
from .usage_reporter import UsageReporter

__all__ = ["Backoff", "ClientSettings", "NodeInfo", "OperatorClient"]

log = logging.getLogger(__name__)
_TEARDOWN_SECONDS = 5.0  # longest wait for a cancelled stream task to finish
_INVALID_ARGUMENT = 3  # google.rpc.Code


class OperatorClient:
    """Keeps a sidecar subscribed to the operator; ``start()``/``stop()`` run it in the background."""

    def __init__(
        self,
        *,
        settings: ClientSettings,
        node: NodeInfo,
        store: ConfigStore,
        usage: UsageBuffer,
        allowances: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.node = node
        self.store = store
        self.allowances = allowances  # budget.lease_client.OperatorSource: given the channel while connected
        self.reporter = UsageReporter(buffer=usage, sidecar_id=node.id, interval=settings.usage_interval)
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.connects = 0
        self.acks = 0
        self.nacks = 0
        self.last_error = ""

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop the streams; with ``drain_seconds``, first give a connected operator that long to
        acknowledge the usage still here, so a clean stop (a rollout, a drain) loses none of it."""
        if self._task is not None and drain_seconds > 0:
            deadline = asyncio.get_running_loop().time() + drain_seconds
            while self.connected and (len(self.reporter.buffer) or self.reporter.unacked):
                if asyncio.get_running_loop().time() >= deadline:
                    break
                self.reporter.flush_soon()
                await asyncio.sleep(0.02)
            left = len(self.reporter.buffer) + self.reporter.unacked_records
            if left:
                log.warning("stopping with %d usage records the operator has not acknowledged", left)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2 * _TEARDOWN_SECONDS)
            self._task = None

    async def run(self) -> None:
        """Connect, serve the streams, and reconnect with backoff, until cancelled."""
        attempt = 0
        while True:
            try:
                accepted = await self._session()
                attempt = 0 if accepted else attempt + 1
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
                level = logging.ERROR if exc.code() in _REFUSED else logging.WARNING
                log.log(level, "operator %s: %s", self.settings.target, self.last_error)
                attempt += 1
            except Exception as exc:
                self.last_error = str(exc)
                log.warning("operator %s: %s", self.settings.target, exc)
                attempt += 1
            finally:
                self.connected = False
            delay = self.settings.backoff.delay(attempt, self._rng)
            log.info(
                "reconnecting to the operator in %.2fs (serving config %s)",
                delay,
                self.store.version or "none",
            )
            await asyncio.sleep(delay)

    def _channel(self) -> Any:
        credentials = grpc.ssl_channel_credentials(root_certificates=self.settings.ca_file.read_bytes())
        options: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            # Our own backoff decides when to reconnect; the channel should not add its own.
            ("grpc.initial_reconnect_backoff_ms", 100),
        ]
        if self.settings.server_name:
            options.append(("grpc.ssl_target_name_override", self.settings.server_name))
        return grpc.aio.secure_channel(self.settings.target, credentials, options=options)

    async def _session(self) -> bool:
        """One connection; returns whether the server accepted it."""
        token = self.settings.token_file.read_text().strip()  # re-read: projected tokens rotate
        metadata = (("authorization", f"Bearer {token}"),)
        self.connects += 1
        accepted = False
        async with self._channel() as channel:
            call = dpb_grpc.ConfigDiscoveryStub(channel).StreamConfig(metadata=metadata)
            usage_task: asyncio.Task[None] | None = None
            try:
                await call.write(dpb.ConfigRequest(node=_node(self.node), version_info=self.store.version))
                # The server sends its initial metadata once it has authenticated and accepted us.
                if "x-llmroute-session" not in dict(await call.initial_metadata() or ()):
                    await call.read()  # raises the refusal
                    return False
                self.connected = accepted = True
                log.info(
                    "connected to the operator %s (running %s)",
                    self.settings.target,
                    self.store.version or "-",
                )
                usage_task = asyncio.create_task(
                    self._report_usage(upb_grpc.UsageReportingStub(channel), metadata)
                )
                if self.allowances is not None:
                    self.allowances.attach(channel, metadata)
                while (response := await call.read()) is not grpc.aio.EOF:
                    await call.write(self._apply(response))
                # The server ended the stream cleanly (it is shutting down): reconnect.
            finally:
                self.connected = False
                if self.allowances is not None:
                    self.allowances.detach()
                call.cancel()
                if usage_task is not None:
                    usage_task.cancel()
                    # Not `await usage_task`: that would eat our own cancel. Bounded: a write stuck in
                    # gRPC's flow control must not hold a stopping sidecar forever.
                    await asyncio.wait({usage_task}, timeout=_TEARDOWN_SECONDS)
        return accepted

    def _apply(self, response: dpb.ConfigResponse) -> dpb.ConfigRequest:
        try:
            self.store.apply(response.config)
        except ConfigError as exc:
            self.nacks += 1
            return dpb.ConfigRequest(
                version_info=self.store.version,
                response_nonce=response.nonce,
                error_detail=dpb.ErrorDetail(code=_INVALID_ARGUMENT, message=str(exc)),
            )
        self.acks += 1
        return dpb.ConfigRequest(version_info=response.version_info, response_nonce=response.nonce)

    async def _report_usage(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        """Keep a usage stream open while the connection lives (reopened if it breaks on its own)."""
        while True:
            call = stub.ReportUsage(metadata=metadata)
            sender = asyncio.create_task(self.reporter.pump(call))
            try:
                while (ack := await call.read()) is not grpc.aio.EOF:
                    self.reporter.ack(ack.acked_sequence)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    return
                log.warning("usage stream ended: %s %s", exc.code().name, exc.details())
            finally:
                sender.cancel()
                call.cancel()
                await asyncio.wait({sender}, timeout=_TEARDOWN_SECONDS)
            await asyncio.sleep(1.0)


def _node(node: NodeInfo) -> dpb.Node:
    return dpb.Node(
        id=node.id,
        pod_name=node.pod_name,
        namespace=node.namespace,
        pod_uid=node.pod_uid,
        node_name=node.node_name,
        region=node.region,
        sidecar_version=node.version,
    )


_REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
