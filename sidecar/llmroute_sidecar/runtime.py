"""Assembles a running sidecar: store, upstream client, service, HTTP, admin (and gRPC) servers.

Used by the CLI (``__main__.py``) and by integration tests, which start a real sidecar on ephemeral
loopback ports in-process. Nothing here parses flags; :class:`Settings` holds the resolved values.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import web
from .abuse import AbuseCounters, AbuseGuard
from .admin import make_admin_app
from .audit import AuditLog
from .batch import (
    BatchStore,
    BatchWorker,
    ProviderBatches,
    ProviderBatchSettings,
    WorkerSettings,
    service_runner,
)
from .budget import AllowanceSource, BudgetGuard, LocalSource
from .cache import ResponseCache
from .config.store import ConfigStore
from .experiment import ResponseArms
from .http_front import DEFAULT_MAX_BODY, make_http_app
from .load import LoadSettings
from .memory import ConversationMemory, MemoryStore
from .metrics import Metrics
from .operator_settings import ClientSettings, NodeInfo
from .policy_metrics import TenantLabels
from .ratelimit import RateLimiter
from .request_policies import RequestPolicies
from .service import RouterService
from .tracing import Tracing
from .upstream import UpstreamClient, UpstreamClientName, make_upstream
from .usage import UsageBuffer

if TYPE_CHECKING:
    import redis.asyncio

    from .config.standalone import StandaloneSource
    from .operator_client import OperatorClient

__all__ = ["Settings", "Sidecar", "split_addr"]

log = logging.getLogger(__name__)


def split_addr(addr: str) -> tuple[str, int]:
    """``"127.0.0.1:14080"`` -> ("127.0.0.1", 14080); ``":14090"`` binds every interface."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {addr!r} must be host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True)
class Settings:
    config_path: Path | None = None
    namespace: str | None = None
    region: str = ""
    http_addr: str = "127.0.0.1:14080"
    grpc_addr: str = "127.0.0.1:14081"
    admin_addr: str = ":14090"
    max_body: int = DEFAULT_MAX_BODY
    watch_seconds: float = 2.0
    grpc: bool = True
    upstream_client: UpstreamClientName = "httptools"  # the provider-facing HTTP client (upstream.py)
    load: LoadSettings = field(default_factory=LoadSettings)  # per-backend queue sizing (load/)
    operator: ClientSettings | None = None  # operator mode: config pushed by the config server
    node: NodeInfo | None = None  # operator mode: who this sidecar claims to be (default: from env)
    redis_url: str = ""  # shared cache and rate-limit buckets across replicas; "" = in-process only
    audit_log: str | None = None  # "-" (stdout), a file path, or None (off)
    cache_memory_bytes: int = 32 * 2**20  # the in-process response cache's LRU bound
    metrics_tenants: tuple[str, ...] = ()  # tenants that always get their own metric label
    max_tenant_labels: int = 20  # otherwise the first N tenants seen do; the rest are "other"
    batch: WorkerSettings = field(default_factory=WorkerSettings)  # batch lines (needs redis_url)
    otlp_endpoint: str = ""  # OpenTelemetry traces over OTLP/gRPC, e.g. http://otel-collector:4317; "" = off


class Sidecar:
    """A sidecar process's moving parts; start() binds, stop() drains and closes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ConfigStore()
        self.metrics = Metrics(
            tenants=TenantLabels(allow=settings.metrics_tenants, max_tenants=settings.max_tenant_labels)
        )
        # Usage records wait here for the operator. A standalone sidecar has nobody to report to, so
        # it keeps only a short recent window (metrics carry the totals): a large backlog nobody
        # drains would cost memory and lengthen every full garbage collection.
        self.usage = UsageBuffer(capacity=100_000 if settings.operator is not None else 1_000)
        self.upstream: UpstreamClient = make_upstream(settings.upstream_client)
        self.redis = _redis_client(settings.redis_url) if settings.redis_url else None
        # Who this sidecar is: one id for its config session, usage batches and allowance leases.
        self.node = settings.node or NodeInfo.from_env(region=settings.region)
        self.allowances: AllowanceSource = LocalSource()
        if settings.operator is not None:
            from .budget.lease_client import OperatorSource  # loads grpc: only in operator mode

            self.allowances = OperatorSource(sidecar_id=self.node.id)
        self.policies = self._policies(settings)
        self.service = RouterService(
            store=self.store,
            upstream=self.upstream,
            metrics=self.metrics,
            usage=self.usage,
            region=settings.region,
            load=settings.load,
            policies=self.policies,
            tracing=Tracing(
                settings.otlp_endpoint, service_name=f"llmroute-sidecar/{self.node.workload or 'sidecar'}"
            ),
            memory=ConversationMemory(
                MemoryStore(_redis_client(settings.redis_url, timeout=2.0)) if settings.redis_url else None,
                events=self.metrics.memory_events,
            ),
        )
        # Batch jobs live in the shared Redis, under this workload's scope, so that its replicas
        # share them; a client of their own: a stream read blocks for a second, and a batch write
        # may wait where the cache and rate limiter would rather give up after 0.25 s.
        self.batches: BatchStore | None = None
        self.batch_worker: BatchWorker | None = None
        if settings.redis_url:
            scope = (
                f"{self.node.namespace or settings.namespace or 'default'}/{self.node.workload or 'sidecar'}"
            )
            self.batches = BatchStore(
                _redis_client(settings.redis_url, timeout=10.0),
                scope,
                retention_seconds=settings.batch.retention_seconds,
                window_seconds=settings.batch.window_seconds,
            )
            batch = settings.batch
            listener = lambda event: self.metrics.batch_lines.labels(event).inc()  # noqa: E731
            self.batch_worker = BatchWorker(
                self.batches,
                service_runner(self.service),
                consumer=self.node.id,
                settings=batch,
                listener=listener,
                # Lines bound for a backend with a provider batch API go there (batch/provider_*.py).
                provider=ProviderBatches(
                    self.batches,
                    self.service,
                    self.upstream,
                    consumer=self.node.id,
                    settings=ProviderBatchSettings(
                        poll_seconds=batch.provider_poll_seconds,
                        flush_seconds=batch.provider_flush_seconds,
                        max_lines=batch.provider_max_lines,
                        owner_seconds=batch.claim_idle_seconds,
                    ),
                    listener=listener,
                ),
            )
        self.store.on_swap(self._on_swap)
        self.store.on_reject(lambda _message: self.metrics.config_rejected.inc())
        self._servers: list[web.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: object | None = None
        self.http_port = 0
        self.admin_port = 0
        self.grpc_port = 0
        self.source: StandaloneSource | None = None
        self.operator: OperatorClient | None = None  # operator mode: the config server's client

    def _policies(self, settings: Settings) -> RequestPolicies:
        metrics = self.metrics

        def on_budget(event: str, budget: str) -> None:
            guard = self.policies.budgets
            wallet = guard.wallets.get(budget)
            available = wallet.available(guard.clock()) / 1e6 if wallet is not None else None
            metrics.policy.budget_event(event, budget, available)

        node = self.node
        return RequestPolicies(
            metrics=metrics,
            usage=self.usage,
            budgets=BudgetGuard(source=self.allowances, listener=on_budget),
            rates=RateLimiter(redis=self.redis),
            cache=ResponseCache(
                memory_bytes=settings.cache_memory_bytes,
                redis=self.redis,
                on_event=lambda event: metrics.policy.cache_events.labels(event).inc(),
            ),
            audit=AuditLog(settings.audit_log, namespace=node.namespace, workload=node.workload),
            abuse=AbuseGuard(
                AbuseCounters(self.redis), blocks=metrics.abuse_blocks, refused=metrics.abuse_refused
            ),
            responses=ResponseArms(self.redis),
        )

    def _on_swap(self, snapshot: object) -> None:
        self.metrics.config_info.clear()
        self.metrics.config_info.labels(self.store.version).set(1)

    async def _serve(self, app: web.Application, addr: str) -> int:
        host, port = split_addr(addr)
        # Our own server on httptools (web/): a handler is not cancelled when its app disconnects
        # (aiohttp's default): a stream notices at its next write, a whole answer is still
        # accounted. A stop lets requests in flight finish within its grace (stop() below).
        server = web.Server(app)
        bound = await server.start(host, port)
        self._servers.append(server)
        return bound

    def _unacked(self) -> int:
        return self.operator.reporter.unacked_records if self.operator is not None else 0

    async def start(self) -> None:
        if self.settings.config_path is not None:
            # Imported here: the YAML loader and compiler (pydantic, PyYAML) cost ~10 MB that an
            # operator-fed sidecar never needs.
            from .config.standalone import StandaloneSource

            self.source = StandaloneSource(
                self.settings.config_path,
                self.store,
                namespace=self.settings.namespace,
                region=self.settings.region,
                poll_seconds=self.settings.watch_seconds,
            )
            self.source.load()
            if self.settings.watch_seconds > 0:
                self._tasks.append(asyncio.create_task(self.source.watch()))
        self.http_port = await self._serve(
            make_http_app(self.service, max_body=self.settings.max_body, batches=self.batches),
            self.settings.http_addr,
        )
        self.admin_port = await self._serve(
            make_admin_app(self.store, self.metrics, self.usage, self._unacked), self.settings.admin_addr
        )
        if self.settings.grpc:
            from .grpc_front import start_grpc

            self._grpc, self.grpc_port = await start_grpc(self.service, self.settings.grpc_addr)
        if self.settings.operator is not None:
            from .operator_client import OperatorClient  # loads grpc: only in operator mode

            self.operator = OperatorClient(
                settings=self.settings.operator,
                node=self.node,
                store=self.store,
                usage=self.usage,
                allowances=self.allowances,
            )
            await self.operator.start()
        await self.policies.budgets.start()
        if self.batch_worker is not None:
            await self.batch_worker.start()
        # Everything allocated so far (modules, config, servers) lives as long as the process: move
        # it out of the collector's view, so full collections stay short under load
        # (docs/performance.md measured p99 109 -> 45 ms at concurrency 64).
        gc.collect()
        gc.freeze()
        _give_back_freed_heap()
        log.info(
            "llmroute sidecar serving: http %s (port %d), grpc %s (port %d), admin %s (port %d)",
            self.settings.http_addr,
            self.http_port,
            self.settings.grpc_addr,
            self.grpc_port,
            self.settings.admin_addr,
            self.admin_port,
        )

    async def stop(self, grace: float = 5.0) -> None:
        # The fronts first: requests in flight finish, and their usage is recorded, before the
        # budget client gives unspent allowance back and the operator client hands the usage over.
        # Each step is logged: a stop that hangs says where (the pod is killed at its grace anyway).
        if self._grpc is not None:
            from .grpc_front import stop_grpc

            log.info("stopping: the gRPC front (in-flight calls get %.0f s)", grace)
            await stop_grpc(self._grpc, grace)
        log.info("stopping: the HTTP fronts (in-flight requests get %.0f s)", grace)
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
        if self.batch_worker is not None:
            log.info("stopping: the batch worker (running lines get %.0f s)", grace)
            await self.batch_worker.stop(grace)
        log.info("stopping: giving unspent allowance back")
        await self.policies.budgets.stop()  # while the operator is there
        if self.operator is not None:
            log.info("stopping: handing the usage over to the operator")
            await self.operator.stop(drain_seconds=grace)
        log.info("stopping: closing clients")
        for task in self._tasks:
            task.cancel()
        await self.upstream.close()
        await self.policies.rates.close()
        await self.policies.cache.close()
        await self.policies.abuse.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.batches is not None:
            await self.batches.redis.aclose()
        if self.service.memory.store is not None:
            await self.service.memory.store.redis.aclose()
        self.policies.audit.close()
        # The last spans go out; in a thread, since the exporter blocks while it sends them.
        await asyncio.to_thread(self.service.tracing.close)


def _redis_client(url: str, *, timeout: float = 0.25) -> redis.asyncio.Redis:
    """The shared Redis (imported only when configured). Short timeouts by default: the cache and
    the rate limiter treat a slow Redis as a down one, and fall back (cache off, per-sidecar buckets)."""
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=min(timeout, 2.0))


def _give_back_freed_heap() -> None:
    """Return the heap start-up freed (imports, the first config's parse) to the OS: glibc keeps
    freed memory mapped until asked. About 0.6 MB of idle RSS; a no-op where there is no glibc."""
    import ctypes

    try:
        trim = getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)
    except OSError:  # not glibc (musl, macOS): nothing to do
        return
    if trim is not None:
        trim(0)
