"""The operator, composed: index, config hub and server, budgets, kopf handlers, webhooks, status.

:func:`run` builds every part with its collaborators passed in, starts them in dependency order and
stops them in reverse on SIGTERM/SIGINT (or when ``stop`` is set):

1. ``/readyz`` turns 503 and the budget service refuses new usage batches and leases;
2. the leader writes the spend it counted and acknowledges it, then releases the leader Lease (a
   peer takes over within one election round); a replica that does not lead withdraws its sync
   report from the leader;
3. the status writers and the election stop, and the config server drains (streams get ``grace``
   seconds, sidecars reconnect to another replica and send their unacknowledged usage there);
4. kopf stops: watches end and, in ``--dev``, it removes the webhooks it registered;
5. the hub stops.

High availability: every replica runs all of this; kopf runs standalone on each (its handlers only
fill the index, so several replicas may watch at once), and ``leadership.py`` elects the one that
writes status, counts spend and grants allowance. The others forward those calls to it
(``configserver/forward.py``) and report their sidecars' sync counts (``configserver/peers.py``).
Readiness means "this replica can serve": initial sync done, servers up.

kopf runs in-process with its own :class:`kopf.OperatorRegistry` (handlers are closures over the
parts, no module globals) through :func:`kopf.spawn_tasks`/:func:`kopf.run_tasks`, so this module, not
kopf, owns the signals and the order above. Tasks that exist before kopf starts are excluded from
kopf's final sweep of "hung" tasks, which is why every long-lived part starts first.

``--dev``: one throw-away CA (``certs.py``) signs the certificate of both servers; kopf serves the
webhooks on 127.0.0.1 and registers the Validating/MutatingWebhookConfiguration ``llmroute.io`` itself
(``settings.admission.managed``); the CA is written to ``--ca-out``. Otherwise the serving certificate
comes from ``--tls-cert/--tls-key`` and the webhook configurations from the Helm chart; ``tls_reload.py``
watches those files and hands a new consistent set to both servers and the peer link while they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf

from .abuse_events import AbuseEvents
from .budgets import BudgetService
from .certs import make_dev_certificates
from .configserver import ConfigHub, ConfigServer, ServerTls
from .configserver.forward import LeaderLink
from .configserver.peers import MergedSync, PeerSyncBook, SyncReporter
from .experiments import ExperimentService
from .handlers.budgets import BudgetBook, BudgetEvents, BudgetStatus, make_persist, register_budget_handlers
from .handlers.pods import register_pod_handlers
from .handlers.routes import RouteBook, RouteStatus, register_route_handlers
from .handlers.secrets import register_secret_handlers
from .handlers.status import StatusWriter
from .handlers.sync import InitialSync
from .index import ClusterIndex
from .kube import GROUP, VERSION, KubeClient, KubeError
from .leadership import Leadership
from .metrics import OperatorMetrics, ProbeServer, split_addr
from .settings import OperatorSettings
from .tls_reload import ReloadableSslContext, TlsError, TlsFiles, TlsMaterial, TlsWatcher, load_material
from .validation import parse_budget
from .webhooks.admission import register_validation_webhooks
from .webhooks.inject import InjectionConfig
from .webhooks.pods import CaPublisher, register_injection_webhook

__all__ = ["MANAGED_WEBHOOKS", "Operator", "run"]

log = logging.getLogger(__name__)

MANAGED_WEBHOOKS = "llmroute.io"  # name of the webhook configurations kopf manages in --dev
WEBHOOK_IDS = ("validate-llmroute", "validate-llmbudget", "inject-sidecar")


def _version() -> str:
    try:
        return importlib.metadata.version("llmroute")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


@dataclass
class _Tls:
    material: TlsMaterial
    files: TlsFiles | None  # None in --dev: the throw-away certificate never changes

    @property
    def cert_pem(self) -> bytes:
        return self.material.cert_pem

    @property
    def key_pem(self) -> bytes:
        return self.material.key_pem

    @property
    def ca_pem(self) -> bytes | None:
        return self.material.ca_pem


def _tls(settings: OperatorSettings, workdir: Path) -> _Tls:
    if settings.dev:
        certs = make_dev_certificates()
        if settings.ca_out is not None:
            settings.ca_out.parent.mkdir(parents=True, exist_ok=True)
            settings.ca_out.write_bytes(certs.ca_pem)
        return _Tls(load_material(certs.cert_pem, certs.key_pem, certs.ca_pem), None)
    if settings.tls_cert is None or settings.tls_key is None:
        raise SystemExit("llmroute-operator: --tls-cert and --tls-key are required (or run with --dev)")
    files = TlsFiles(cert=settings.tls_cert, key=settings.tls_key, ca=settings.tls_ca)
    cert, key, ca = files.read()
    try:
        material = load_material(cert, key, ca)
    except TlsError as exc:
        try:  # a CA that does not match is the peers' problem (they cannot verify), not fatal here
            material = dataclasses.replace(load_material(cert, key, None), ca_pem=ca)
        except TlsError:
            raise SystemExit(f"llmroute-operator: --tls-cert/--tls-key: {exc}") from None
        log.warning("%s; replicas will not verify each other until the CA file matches", exc)
    log.info("serving TLS certificate (%s)", material.describe())
    return _Tls(material, files)


def _operator_address(settings: OperatorSettings, port: int) -> str:
    """What injected sidecars dial: --config-host, else 127.0.0.1 (dev) or the Service's DNS name."""
    if settings.config_host:
        return settings.config_host
    if settings.dev:
        return f"127.0.0.1:{port}"
    if settings.webhook_service:
        namespace, _, name = settings.webhook_service.partition("/")
        return f"{name}.{namespace}.svc:{port}"
    return f"llmroute-operator.{os.environ.get('POD_NAMESPACE', 'llmroute-system')}.svc:{port}"


@dataclass
class Operator:
    """The running parts (what tests and the benchmark reach into)."""

    settings: OperatorSettings
    kube: KubeClient
    index: ClusterIndex
    metrics: OperatorMetrics
    routes: RouteBook
    budgets_book: BudgetBook
    initial: InitialSync
    leadership: Leadership
    hub: ConfigHub
    budgets: BudgetService
    server: ConfigServer
    probes: ProbeServer
    route_writer: StatusWriter
    budget_writer: StatusWriter
    webhook_url: str = ""
    webhooks_registered: asyncio.Event = field(default_factory=asyncio.Event)
    config_port: int = 0
    stopping: bool = False

    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "stopping"
        if not self.initial.done.is_set():
            return False, "initial sync in progress"
        if self.settings.dev and not self.webhooks_registered.is_set():
            return False, "webhooks not registered yet"
        return True, "ok"


def _advertise_address(settings: OperatorSettings, port: int) -> str:
    """Where peers dial this replica when it leads: --advertise-address, else the pod IP."""
    if settings.advertise_address:
        return settings.advertise_address
    host = os.environ.get("POD_IP") or socket.gethostbyname(socket.gethostname())
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer_server_name(settings: OperatorSettings) -> str:
    """The TLS name peers verify on the leader: its certificate names the config Service."""
    if settings.peer_server_name:
        return settings.peer_server_name
    host = settings.config_host.rpartition(":")[0] if ":" in settings.config_host else settings.config_host
    return host.strip("[]")


async def _list_budgets(kube: KubeClient, settings: OperatorSettings) -> dict[tuple[str, str], Any]:
    """Every LLMBudget as the API server has it now (retried until it answers)."""
    paths = (
        [f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/llmbudgets" for ns in settings.namespaces]
        if settings.namespaces
        else [f"/apis/{GROUP}/{VERSION}/llmbudgets"]
    )
    delay = 0.2
    while True:
        try:
            out: dict[tuple[str, str], Any] = {}
            for path in paths:
                for item in await kube.list_items(path):
                    budget, _ = parse_budget(item)
                    meta = item.get("metadata") or {}
                    if budget is not None:
                        out[(str(meta.get("namespace")), str(meta.get("name")))] = budget
            return out
        except KubeError as exc:
            log.warning("listing budgets to take over failed (retrying): %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _hand_over(
    *,
    budgets: BudgetService,
    experiments: ExperimentService,
    leadership: Leadership,
    reporter: SyncReporter,
    server: ConfigServer,
) -> None:
    """A clean stop: no batch is left counted but unacknowledged, and a peer leads at once."""
    budgets.close_intake()
    if leadership.leader:
        try:
            await asyncio.wait_for(budgets.persist_now(), timeout=5.0)
        except Exception as exc:
            log.warning("final budget status write failed: %s", exc)
        try:
            await asyncio.wait_for(experiments.persist_now(), timeout=5.0)
        except Exception as exc:
            log.warning("final experiment status write failed: %s", exc)
        try:
            await asyncio.wait_for(server.flush_acks(), timeout=2.0)
        except TimeoutError:
            log.warning("some usage acks were not sent before the hand-over")
        await leadership.release()
    else:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reporter.withdraw(), timeout=2.0)
        await leadership.release()


def _experiments(
    *, kube: KubeClient, routes: RouteBook, leadership: Leadership, metrics: OperatorMetrics
) -> ExperimentService:
    """The experiment counter, writing ``LLMRoute.status.experiment`` and its Event as the leader."""

    async def persist(namespace: str, name: str, experiment: dict[str, Any] | None) -> None:
        started = time.perf_counter()
        try:
            await kube.patch_status("llmroutes", namespace, name, {"experiment": experiment})
        except Exception:
            metrics.status_written("LLMRoute", "error", time.perf_counter() - started)
            raise
        metrics.status_written("LLMRoute", "ok", time.perf_counter() - started)

    async def announce(involved: Mapping[str, Any], reason: str, message: str) -> None:
        await kube.create_event(involved, type_="Normal", reason=reason, message=message)

    return ExperimentService(routes=routes, persist=persist, announce=announce, is_leader=leadership)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host or "0.0.0.0", 0))
        return int(probe.getsockname()[1])


class _WebhookServer(kopf.WebhookServer):
    """kopf's webhook server over our :class:`ReloadableSslContext`, reloaded in place.

    Given certificate files, kopf itself would restart its listener when they change, dropping
    admission calls in flight, and would stop serving webhooks at a half-written pair (its
    ``load_cert_chain`` raises). So it gets no files (it then never restarts) and this context.
    """

    def __init__(self, *, tls: ReloadableSslContext, cadata: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reloadable = tls
        self._cadata = cadata

    def _build_ssl(self) -> tuple[bytes | None, ssl.SSLContext | None]:
        return self._cadata, self._reloadable.context  # cadata: the caBundle kopf registers in --dev


def _webhook_server(
    settings: OperatorSettings, tls: _Tls, context: ReloadableSslContext
) -> tuple[kopf.WebhookServer, str]:
    """kopf's webhook server for ``--webhook-addr`` (port 0: a free one), and the URL it announces."""
    host, port = split_addr(settings.webhook_addr, default_host="")
    port = port or _free_port(host)
    announced = settings.webhook_host or (host if host not in ("", "0.0.0.0", "::") else None)
    server = _WebhookServer(
        tls=context, cadata=tls.ca_pem or tls.cert_pem, addr=host or None, port=port, host=announced
    )
    return server, f"https://{announced or socket.gethostname()}:{port}/"


class _CaConfigMaps(CaPublisher):
    """The ``llmroute-ca`` ConfigMaps, kept at the CA the operator serves now: after a CA change the
    namespaces already published get the new bundle (running sidecars re-read it at their next
    reconnect) and newly injected pods get it too, instead of the CA the operator started with."""

    def update(self, ca_pem: bytes | None) -> None:
        if ca_pem is None or ca_pem.decode() == self._ca_pem:
            return
        self._ca_pem = ca_pem.decode()
        namespaces, self._done = sorted(self._done), set()
        task = asyncio.get_running_loop().create_task(self._republish(namespaces), name="llmroute-ca")
        task.add_done_callback(_log_failure)

    async def _republish(self, namespaces: list[str]) -> None:
        for namespace in namespaces:
            try:
                await self.ensure(namespace)
            except Exception as exc:  # the next injection there writes it again
                log.warning("cannot refresh the llmroute-ca ConfigMap in %s: %s", namespace, exc)
        if namespaces:
            log.info("published the new CA to the llmroute-ca ConfigMaps of %d namespaces", len(namespaces))


def _watch_tls(
    tls: _Tls,
    *,
    settings: OperatorSettings,
    context: ReloadableSslContext,
    server: ConfigServer,
    link: LeaderLink,
    metrics: OperatorMetrics,
) -> TlsWatcher | None:
    """Reload both servers' certificate and the peer link's CA when the files change."""
    if tls.files is None:
        metrics.tls_serving(tls.material.not_after)
        return None
    watcher = TlsWatcher(
        files=tls.files,
        current=tls.material,
        interval=settings.tls_reload_seconds,
        check=context.check,
        observer=metrics,
    )
    watcher.on_change(lambda new: server.update_tls(ServerTls(cert_pem=new.cert_pem, key_pem=new.key_pem)))
    watcher.on_change(context.apply)
    watcher.on_change(lambda new: link.update_ca(new.ca_pem))
    return watcher


async def _wait_webhooks_registered(op: Operator, *, kube: KubeClient) -> None:
    """Poll the managed configurations until they point at this operator (dev readiness)."""
    kinds = ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
    while True:
        complete = True
        names: set[str] = set()
        for kind in kinds:
            try:
                obj = await kube.get(f"/apis/admissionregistration.k8s.io/v1/{kind}/{MANAGED_WEBHOOKS}")
            except KubeError:
                complete = False
                break
            for webhook in obj.get("webhooks") or []:
                url = str((webhook.get("clientConfig") or {}).get("url") or "")
                if op.webhook_url and url.startswith(op.webhook_url):
                    names.add(str(webhook.get("name", "")).split(".")[0])
        if complete and all(i in names for i in WEBHOOK_IDS):
            op.webhooks_registered.set()
            log.info("admission webhooks registered at %s", op.webhook_url)
            return
        await asyncio.sleep(0.1)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


def _login(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """kubeconfig first (like ``KubeClient``), else the in-cluster ServiceAccount."""
        if os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs)


async def run(
    settings: OperatorSettings,
    *,
    stop: asyncio.Event | None = None,
    started: Callable[[Operator], Awaitable[None] | None] | None = None,
) -> None:
    """Run the operator until SIGTERM/SIGINT or ``stop``; ``started(op)`` is called once it runs."""
    stop = stop if stop is not None else asyncio.Event()
    workdir = Path(tempfile.mkdtemp(prefix="llmroute-operator-"))
    try:
        await _run(settings, stop=stop, workdir=workdir, started=started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(
    settings: OperatorSettings,
    *,
    stop: asyncio.Event,
    workdir: Path,
    started: Callable[[Operator], Awaitable[None] | None] | None,
) -> None:
    tls = _tls(settings, workdir)
    kube = KubeClient()
    metrics = OperatorMetrics()
    index = ClusterIndex()
    routes = RouteBook(index=index)
    budgets_book = BudgetBook(index=index, routes=routes)
    initial = InitialSync()
    identity = f"{socket.gethostname()}/{os.getpid()}-{secrets.token_hex(3)}"
    if not settings.standalone and tls.ca_pem is None:
        raise SystemExit(
            "llmroute-operator: --tls-ca is required with leader election (replicas verify the leader "
            "with it); pass it, or run one replica with --standalone"
        )
    leadership = Leadership(settings=settings, kube=kube, identity=identity, address="", metrics=metrics)
    hub = ConfigHub(index=index, settings=settings, kube=kube, observer=metrics)
    holder: dict[str, BudgetService] = {}
    observer = BudgetEvents(
        kube=kube, book=budgets_book, metrics=metrics, reports=lambda: holder.get("budgets")
    )
    budgets = BudgetService(
        index=index,
        settings=settings,
        persist=make_persist(kube=kube, is_leader=leadership, metrics=metrics),
        observer=observer,
        active=settings.standalone,
    )
    holder["budgets"] = budgets
    experiments = _experiments(kube=kube, routes=routes, leadership=leadership, metrics=metrics)
    budgets.add_consumer(experiments)
    experiments.on_written(budgets.consumer_wrote)
    routes.on_change(experiments.refresh)
    abuse_events = AbuseEvents(
        routes=routes,
        emit=lambda involved, message: kube.create_event(
            involved, type_="Warning", reason="AbuseBlocked", message=message
        ),
    )
    budgets.add_consumer(abuse_events)
    peer_book = PeerSyncBook()
    link = LeaderLink(leadership=leadership, ca_pem=tls.ca_pem, server_name=_peer_server_name(settings))
    reporter = SyncReporter(
        hub=hub, index=index, leadership=leadership, link=link, token_file=settings.peer_token_file
    )
    merged = MergedSync(local=hub, peers=peer_book)
    server = ConfigServer(
        settings=settings,
        hub=hub,
        budgets=budgets,
        kube=kube,
        tls=ServerTls(cert_pem=tls.cert_pem, key_pem=tls.key_pem),
        leadership=leadership,
        link=link,
        peers=peer_book,
        observer=metrics,
    )
    route_writer = StatusWriter(
        kind="LLMRoute",
        plural="llmroutes",
        source=RouteStatus(book=routes, sync=lambda: merged if hub.ready else None),
        kube=kube,
        metrics=metrics,
        is_leader=leadership,
    )
    budget_writer = StatusWriter(
        kind="LLMBudget",
        plural="llmbudgets",
        source=BudgetStatus(book=budgets_book, reports=lambda: budgets),
        kube=kube,
        metrics=metrics,
        is_leader=leadership,
    )
    routes.on_change(route_writer.mark)
    hub.on_route_sync(route_writer.mark)
    hub.on_route_sync(reporter.mark)
    peer_book.on_change(route_writer.mark)
    budgets_book.on_change(budget_writer.mark)
    budgets.on_report(budget_writer.mark)

    op = Operator(
        settings=settings,
        kube=kube,
        index=index,
        metrics=metrics,
        routes=routes,
        budgets_book=budgets_book,
        initial=initial,
        leadership=leadership,
        hub=hub,
        budgets=budgets,
        server=server,
        probes=ProbeServer(metrics=metrics, addr=settings.metrics_addr, ready=lambda: op.readiness()),
        route_writer=route_writer,
        budget_writer=budget_writer,
    )

    registry = kopf.OperatorRegistry()
    _login(registry)
    register_route_handlers(registry, book=routes, initial=initial, metrics=metrics)
    register_budget_handlers(registry, book=budgets_book, initial=initial, metrics=metrics)
    register_secret_handlers(registry, index=index, routes=routes, initial=initial, metrics=metrics)

    kopf_settings = kopf.OperatorSettings()
    kopf_settings.posting.level = logging.WARNING
    register_pod_handlers(registry, kopf_settings, hub=hub, metrics=metrics)
    webhook_tls = ReloadableSslContext(tls.material, directory=workdir / "webhook-tls")
    kopf_settings.admission.server, op.webhook_url = _webhook_server(settings, tls, webhook_tls)
    tls_watcher = _watch_tls(
        tls, settings=settings, context=webhook_tls, server=server, link=link, metrics=metrics
    )
    if settings.dev:
        kopf_settings.admission.managed = MANAGED_WEBHOOKS

    background: list[asyncio.Task[Any]] = []
    await op.probes.start()
    await hub.start()
    await budgets.start()
    op.config_port = await server.start()
    injection = InjectionConfig(
        template=settings.sidecar,
        operator_address=_operator_address(settings, op.config_port),
        version=_version(),
        with_ca=tls.ca_pem is not None,
    )
    ca = _CaConfigMaps(kube=kube, ca_pem=tls.ca_pem.decode()) if tls.ca_pem is not None else None
    if tls_watcher is not None and ca is not None:
        tls_watcher.on_change(lambda new: ca.update(new.ca_pem))
    register_validation_webhooks(
        registry, settings=settings, index=index, routes=routes, kube=kube, metrics=metrics
    )
    register_injection_webhook(
        registry, settings=settings, config=injection, kube=kube, ca=ca, metrics=metrics
    )
    leadership.address = _advertise_address(settings, op.config_port)
    takeover: list[asyncio.Task[None]] = []

    async def lead() -> None:
        """Start counting from the spend the API server holds now, then write every status."""
        await initial.done.wait()
        fresh = await _list_budgets(kube, settings)
        if leadership.leader:
            budgets.activate(fresh)
            route_writer.mark_all()
            budget_writer.mark_all()

    async def on_leadership(leading: bool) -> None:
        for task in takeover:
            task.cancel()
        takeover.clear()
        if leading:
            task = asyncio.create_task(lead(), name="take over")
            task.add_done_callback(_log_failure)
            takeover.append(task)
        else:
            budgets.deactivate()
            peer_book.clear()
            reporter.mark()

    leadership.on_change(on_leadership)

    async def expire_peers() -> None:
        while True:
            await asyncio.sleep(1.0)
            peer_book.expire()
            metrics.peers.set(peer_book.replicas())

    async def initial_sync() -> None:
        await initial.wait(kube=kube, namespaces=settings.namespaces)
        hub.mark_ready()
        budgets.mark_ready()
        route_writer.mark_all()
        budget_writer.mark_all()

    background += [
        asyncio.create_task(leadership.run(), name="leadership"),
        asyncio.create_task(reporter.run(), name="sync reports"),
        asyncio.create_task(expire_peers(), name="peer reports"),
        asyncio.create_task(route_writer.run(), name="route status"),
        asyncio.create_task(budget_writer.run(), name="budget status"),
        asyncio.create_task(experiments.run(), name="experiment status"),
        asyncio.create_task(initial_sync(), name="initial sync"),
    ]
    if settings.dev:
        background.append(asyncio.create_task(_wait_webhooks_registered(op, kube=kube), name="webhooks"))
    if tls_watcher is not None:
        background.append(asyncio.create_task(tls_watcher.run(), name="tls reload"))
    for task in background:
        task.add_done_callback(_log_failure)

    kopf_stop = asyncio.Event()
    kopf_task = asyncio.create_task(
        _run_kopf(registry, kopf_settings, settings, identity, kopf_stop=kopf_stop, stop=stop), name="kopf"
    )
    if started is not None:
        maybe = started(op)
        if asyncio.iscoroutine(maybe):
            await maybe
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopper, kopf_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        op.stopping = True
        log.info("llmroute-operator stopping")
        await _hand_over(
            budgets=budgets, experiments=experiments, leadership=leadership, reporter=reporter, server=server
        )
        for task in takeover:
            task.cancel()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await server.stop(grace=5.0)
        if not kopf_task.done():
            kopf_stop.set()
            try:
                await asyncio.wait_for(kopf_task, timeout=30)
            except (TimeoutError, Exception) as exc:
                log.warning("kopf did not stop cleanly: %r", exc)
        elif kopf_task.exception() is not None:
            log.error("kopf exited: %r", kopf_task.exception())
        await budgets.stop()
        await link.close()
        await hub.stop()
        await op.probes.stop()
        await kube.close()
        log.info("llmroute-operator stopped")


async def _run_kopf(
    registry: kopf.OperatorRegistry,
    kopf_settings: kopf.OperatorSettings,
    settings: OperatorSettings,
    identity: str,
    *,
    kopf_stop: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    existing = asyncio.all_tasks()
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=kopf_settings,
        identity=cast(Any, identity),  # kopf's Identity is a NewType of str
        # Every replica watches: the handlers only fill the index, and leadership.py (not kopf
        # peering, which would pause the watches of all replicas but one) decides who writes.
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        stop_flag=kopf_stop,
    )
    if threading.current_thread() is threading.main_thread():
        # kopf installed its own handlers (stop at once); ours stop the parts in order instead.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
    await kopf.run_tasks(tasks, ignored=existing)
