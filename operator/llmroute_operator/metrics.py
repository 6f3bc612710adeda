"""Operator metrics and the probe endpoints, served on ``--metrics-addr`` (``:14091``).

:class:`OperatorMetrics` owns its own Prometheus registry (no process-global state) and implements
the observer protocols of the config hub (``configserver.HubObserver``: connected sidecars, push
latency, NACKs) and the budget service (``budgets.BudgetObserver``: spend, state, alerts), so
``app.py`` passes one object to both. The handlers count reconciles and status writes; the webhooks
count admissions and injections. :class:`ProbeServer` serves ``/metrics``, ``/healthz`` (the process
runs) and ``/readyz`` (initial sync done and servers up: every replica serves sidecars and webhook
calls, whether it leads or not; ``llmroute_operator_leader`` says which one leads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["OperatorMetrics", "ProbeServer", "split_addr"]

log = logging.getLogger(__name__)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_PUSH = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OperatorMetrics:
    """Every metric of the operator, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconciles = Counter(
            "llmroute_operator_reconciles",
            "Watch events handled, by kind and result.",
            ["kind", "result"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "llmroute_operator_reconcile_duration_seconds",
            "Time to handle one watch event.",
            ["kind"],
            buckets=_FAST,
            registry=r,
        )
        self.status_writes = Counter(
            "llmroute_operator_status_writes",
            "Status patches, by kind and result.",
            ["kind", "result"],
            registry=r,
        )
        self.status_seconds = Histogram(
            "llmroute_operator_status_write_duration_seconds",
            "Time of one status patch.",
            ["kind"],
            buckets=_FAST,
            registry=r,
        )
        self.sidecars = Gauge(
            "llmroute_operator_sidecars_connected", "Sidecars connected to this replica.", registry=r
        )
        self.push_seconds = Histogram(
            "llmroute_operator_config_push_seconds",
            "From a change reaching the hub to a sidecar's ACK of the config carrying it.",
            ["namespace"],
            buckets=_PUSH,
            registry=r,
        )
        self.nacks = Counter(
            "llmroute_operator_config_nacks", "Configs sidecars rejected.", ["namespace"], registry=r
        )
        self.budget_spent_usd = Gauge(
            "llmroute_operator_budget_spent_usd",
            "Spend in the current period.",
            ["namespace", "budget"],
            registry=r,
        )
        self.budget_limit_usd = Gauge(
            "llmroute_operator_budget_limit_usd",
            "The budget's limits per period (limit is soft or hard).",
            ["namespace", "budget", "limit"],
            registry=r,
        )
        self.budget_forecast_usd = Gauge(
            "llmroute_operator_budget_forecast_usd",
            "Spend expected by the end of the period at the run rate so far.",
            ["namespace", "budget"],
            registry=r,
        )
        self.budget_state_gauge = Gauge(
            "llmroute_operator_budget_state",
            "1 for the budget's current state (Normal, SoftLimited, Exhausted).",
            ["namespace", "budget", "state"],
            registry=r,
        )
        self.budget_alerts = Counter(
            "llmroute_operator_budget_alerts",
            "Alert thresholds crossed.",
            ["namespace", "budget", "percent"],
            registry=r,
        )
        self.admissions = Counter(
            "llmroute_operator_admissions",
            "Admission reviews, by webhook and result (allowed, denied, error).",
            ["webhook", "result"],
            registry=r,
        )
        self.admission_seconds = Histogram(
            "llmroute_operator_admission_duration_seconds",
            "Time to answer an admission review.",
            ["webhook"],
            buckets=_FAST,
            registry=r,
        )
        self.injections = Counter(
            "llmroute_operator_injections",
            "Pods seen by the injection webhook, by outcome (injected, present, skipped, refused).",
            ["outcome"],
            registry=r,
        )
        self.leader = Gauge(
            "llmroute_operator_leader", "1 while this replica leads (writes status).", registry=r
        )
        self.ready = Gauge("llmroute_operator_ready", "1 once the replica is ready.", registry=r)
        self.peers = Gauge(
            "llmroute_operator_peers",
            "Other replicas whose sidecar sync reports the leader counts (0 on the others).",
            registry=r,
        )
        self.forwards = Counter(
            "llmroute_operator_forwarded_calls",
            "Usage streams and allowance calls a replica that does not lead passed to the leader, "
            "by call (usage, lease, renew, return) and result (ok, error).",
            ["call", "result"],
            registry=r,
        )
        self.tls_reloads = Counter(
            "llmroute_operator_tls_reloads",
            "Changes of the serving certificate files: ok (now serving them) or error (inconsistent or "
            "unreadable; the previous certificate keeps serving).",
            ["result"],
            registry=r,
        )
        self.tls_expiry = Gauge(
            "llmroute_operator_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use (config server and webhooks), Unix seconds.",
            registry=r,
        )
        self.refusals = Counter(
            "llmroute_operator_config_server_refusals",
            "Sidecar calls the config server refused before they reached the hub or the budgets, by "
            "call and gRPC status (malformed messages, claims that disagree with the token, bad numbers).",
            ["call", "code"],
            registry=r,
        )

    # -- tls_reload.TlsObserver ---------------------------------------------------------------------

    def tls_reloaded(self, result: str) -> None:
        self.tls_reloads.labels(result).inc()

    def tls_serving(self, not_after: datetime) -> None:
        self.tls_expiry.set(not_after.timestamp())

    def refused(self, call: str, code: str) -> None:
        self.refusals.labels(call, code).inc()

    # -- handlers and webhooks ----------------------------------------------------------------------

    def forwarded(self, call: str, result: str) -> None:
        self.forwards.labels(call, result).inc()

    def reconciled(self, kind: str, result: str, seconds: float) -> None:
        self.reconciles.labels(kind, result).inc()
        self.reconcile_seconds.labels(kind).observe(seconds)

    def status_written(self, kind: str, result: str, seconds: float) -> None:
        self.status_writes.labels(kind, result).inc()
        self.status_seconds.labels(kind).observe(seconds)

    def admitted(self, webhook: str, result: str, seconds: float) -> None:
        self.admissions.labels(webhook, result).inc()
        self.admission_seconds.labels(webhook).observe(seconds)

    def injected(self, outcome: str) -> None:
        self.injections.labels(outcome).inc()

    # -- configserver.HubObserver -------------------------------------------------------------------

    def sidecars_connected(self, count: int) -> None:
        self.sidecars.set(count)

    def config_acked(self, namespace: str, seconds: float) -> None:
        self.push_seconds.labels(namespace).observe(seconds)

    def config_nacked(self, namespace: str) -> None:
        self.nacks.labels(namespace).inc()

    # -- budgets.BudgetObserver ---------------------------------------------------------------------

    def budget_spent(self, namespace: str, name: str, usd: float) -> None:
        self.budget_spent_usd.labels(namespace, name).set(usd)

    def budget_state(self, namespace: str, name: str, state: str) -> None:
        for known in ("Normal", "SoftLimited", "Exhausted"):
            self.budget_state_gauge.labels(namespace, name, known).set(1 if known == state else 0)

    def budget_limits(
        self, namespace: str, name: str, *, hard: float, soft: float | None, forecast: float
    ) -> None:
        self.budget_limit_usd.labels(namespace, name, "hard").set(hard)
        if soft is not None:
            self.budget_limit_usd.labels(namespace, name, "soft").set(soft)
        self.budget_forecast_usd.labels(namespace, name).set(forecast)

    def budgets_forgotten(self) -> None:
        """This replica stopped leading: its budget gauges would only go stale."""
        for gauge in (self.budget_spent_usd, self.budget_limit_usd, self.budget_forecast_usd):
            gauge.clear()
        self.budget_state_gauge.clear()

    def budget_alert(self, namespace: str, name: str, percent: int) -> None:
        self.budget_alerts.labels(namespace, name, str(percent)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def split_addr(addr: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``"host:port"``, ``":port"`` or ``"[::1]:port"`` into ``(host, port)``."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or default_host
    return host, int(port)


class ProbeServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over plain HTTP."""

    def __init__(self, *, metrics: OperatorMetrics, addr: str, ready: Callable[[], tuple[bool, str]]) -> None:
        self._metrics = metrics
        self._addr = addr
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        del request
        return web.Response(body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        del request
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        del request
        ok, why = self._ready()
        self._metrics.ready.set(1 if ok else 0)
        return web.Response(text=f"{why}\n", status=200 if ok else 503)

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        host, port = split_addr(self._addr)
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        log.info("metrics and probes on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
