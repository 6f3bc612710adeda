"""The config hub: connected sidecars, debounced recompiles, pushes and sync counts.

The gRPC layer (``server.py``) opens a session per authenticated stream and hands every request to
:meth:`ConfigHub.answer`; the hub compiles each session's config from the
:class:`~llmroute_operator.index.ClusterIndex` with the pure compiler, offers it to the session's
state machine (``sessions.py``) and queues whatever that decides to send. Index changes are
debounced per namespace (quiet for ``settings.debounce_seconds``, at most ``max_delay``), and one
compile serves every session that selects the same routes in the same region. The kopf status writer reads
:meth:`route_sync` (``contracts.RouteSyncSource``) when :meth:`on_route_sync` listeners fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmroute_proto.compiler import CompileResult, compile_config, selector_matches
from llmroute_proto.v1 import discovery_pb2 as dpb

from ..contracts import RouteSync
from ..index import ClusterIndex, NamespaceView
from ..settings import OperatorSettings
from .auth import AuthError, Identity, IdentityApi
from .sessions import Answer, Push, Session

__all__ = ["REGION_LABEL", "ConfigHub", "HubObserver", "SessionHandle"]

log = logging.getLogger(__name__)

REGION_LABEL = "topology.kubernetes.io/region"
RouteListener = Callable[[str, str], None]


class HubObserver(Protocol):
    """Metrics hooks (``llmroute_operator.metrics`` implements them)."""

    def sidecars_connected(self, count: int) -> None: ...
    def config_acked(self, namespace: str, seconds: float) -> None: ...
    def config_nacked(self, namespace: str) -> None: ...


class _NoObserver:
    def sidecars_connected(self, count: int) -> None:
        pass

    def config_acked(self, namespace: str, seconds: float) -> None:
        pass

    def config_nacked(self, namespace: str) -> None:
        pass


@dataclass(eq=False)
class SessionHandle:
    """A session plus the queue its stream writer drains (never more than one push waits in it)."""

    session: Session
    queue: asyncio.Queue[Push] = field(default_factory=asyncio.Queue)

    @property
    def namespace(self) -> str:
        return self.session.identity.namespace


class ConfigHub:
    """Sessions by namespace; compiles and pushes on index changes."""

    def __init__(
        self,
        *,
        index: ClusterIndex,
        settings: OperatorSettings,
        kube: IdentityApi,
        observer: HubObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        warmup_seconds: float = 15.0,
        max_delay: float | None = None,
        notify_seconds: float = 0.1,
    ) -> None:
        self._index = index
        self._settings = settings
        self._kube = kube
        self._observer: HubObserver = observer or _NoObserver()
        self._clock = clock
        self._debounce = settings.debounce_seconds
        self._max_delay = max_delay if max_delay is not None else max(1.0, 10 * settings.debounce_seconds)
        self._warmup = warmup_seconds
        self._notify_seconds = notify_seconds
        self._sessions: dict[str, dict[str, SessionHandle]] = {}  # namespace -> id -> handle
        self._first_change: dict[str, float] = {}
        self._last_change: dict[str, float] = {}
        self._listeners: list[RouteListener] = []
        self._dirty_routes: set[tuple[str, str]] = set()
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._next_id = 0
        self.pushes = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._index.subscribe(self._on_change)
        self._tasks = [asyncio.create_task(self._debouncer()), asyncio.create_task(self._notifier())]
        if self._warmup >= 0:
            self._loop.call_later(self._warmup, self._warm_timeout)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def mark_ready(self) -> None:
        """The index holds the cluster's state: sessions may now receive configs."""
        if not self._ready.is_set():
            log.info("config hub ready: %d namespaces indexed", len(self._index.namespaces()))
            self._ready.set()
            for namespace in list(self._sessions):
                self._mark_dirty(namespace)

    def _warm_timeout(self) -> None:
        if not self._ready.is_set():
            log.warning("config hub not marked ready after %.0fs; serving what the index holds", self._warmup)
            self.mark_ready()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # -- sessions ----------------------------------------------------------------------------------

    async def open(self, identity: Identity, hello: dpb.ConfigRequest) -> SessionHandle:
        """Register a stream whose first request was ``hello``; queues its first push."""
        try:
            pod = await self._kube.get_pod(identity.namespace, identity.pod_name)
        except LookupError:
            raise AuthError(
                "permission_denied", f"pod {identity.namespace}/{identity.pod_name} not found"
            ) from None
        meta: Mapping[str, Any] = pod.get("metadata") or {}
        if meta.get("uid") and meta.get("uid") != identity.pod_uid:
            raise AuthError("permission_denied", f"pod {identity.pod_name} was replaced (uid differs)")
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        region = await self._region(pod, hello.node)
        self._next_id += 1
        session = Session(id=f"s{self._next_id}", identity=identity, labels=labels, region=region)
        session.hello(hello)
        handle = SessionHandle(session=session)
        self._sessions.setdefault(identity.namespace, {})[session.id] = handle
        self._observer.sidecars_connected(self.connected)
        log.info(
            "sidecar %s connected as %s (running %s)", hello.node.id, identity, hello.version_info or "-"
        )
        await self._ready.wait()
        if session.id in self._sessions.get(identity.namespace, {}):
            self._offer(
                handle, self._compile(self._index.view(identity.namespace), labels, region), self._clock()
            )
        return handle

    async def _region(self, pod: Mapping[str, Any], node: dpb.Node) -> str:
        """The node's region label when readable (verified), else the sidecar's own claim."""
        node_name = str((pod.get("spec") or {}).get("nodeName") or "")
        get_node = getattr(self._kube, "get_node", None)
        if node_name and get_node is not None:
            try:
                obj = await get_node(node_name)
            except Exception as exc:  # RBAC may not allow it: the claim is good enough for locality
                log.debug("cannot read node %s: %s", node_name, exc)
                obj = None
            region = str(((obj or {}).get("metadata") or {}).get("labels", {}).get(REGION_LABEL) or "")
            if region:
                return region
        return node.region

    def relabel(self, namespace: str, pod_name: str, pod_uid: str, labels: Mapping[str, Any]) -> int:
        """A pod's labels changed (the pod watch of ``handlers/pods.py``): its sessions get the config
        their new labels select, now, without reconnecting. Returns how many sessions changed.

        kopf may call this from a handler thread, like the index listener.
        """
        new = {str(k): str(v) for k, v in labels.items()}
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.relabel, namespace, pod_name, pod_uid, new)
            return 0
        changed = 0
        for handle in list(self._sessions.get(namespace, {}).values()):
            identity = handle.session.identity
            if identity.pod_name != pod_name or (pod_uid and identity.pod_uid != pod_uid):
                continue
            if handle.session.labels == new:
                continue
            log.info("pod %s/%s relabelled: recompiling its sidecar's config", namespace, pod_name)
            handle.session.labels = new
            changed += 1
            if self._ready.is_set():
                view = self._index.view(namespace)
                self._offer(handle, self._compile(view, new, handle.session.region), self._clock())
        return changed

    def close(self, handle: SessionHandle) -> None:
        sessions = self._sessions.get(handle.namespace, {})
        if sessions.pop(handle.session.id, None) is not None:
            self._observer.sidecars_connected(self.connected)
            self._touch_routes(handle.session)
            if not sessions:
                self._sessions.pop(handle.namespace, None)

    def answer(self, handle: SessionHandle, request: dpb.ConfigRequest) -> Answer:
        """An ACK or NACK arrived on ``handle``'s stream."""
        session = handle.session
        flight = session.in_flight
        outcome, push = session.answer(request)
        if outcome is Answer.ACK and flight is not None:
            self._observer.config_acked(handle.namespace, self._clock() - flight.changed_at)
        elif outcome is Answer.NACK:
            self._observer.config_nacked(handle.namespace)
            log.warning(
                "sidecar %s rejected %s: %s",
                session.identity,
                flight and flight.version,
                session.rejected_message,
            )
        if push is not None:
            self._send(handle, push)
        if outcome is not Answer.STALE:
            self._touch_routes(session)
        return outcome

    @property
    def connected(self) -> int:
        return sum(len(s) for s in self._sessions.values())

    def sessions(self, namespace: str | None = None) -> list[Session]:
        spaces = [namespace] if namespace is not None else list(self._sessions)
        return [h.session for ns in spaces for h in self._sessions.get(ns, {}).values()]

    # -- compiling and pushing ---------------------------------------------------------------------

    def _compile(self, view: NamespaceView, labels: Mapping[str, str], region: str) -> CompileResult:
        return compile_config(
            namespace=view.namespace,
            routes=view.routes,
            secrets=view.secrets,
            budgets=view.budgets,
            pod_labels=labels,
            region=region,
            include_spend=False,  # spend-only status writes then compile to the same config: no push
        )

    def _offer(self, handle: SessionHandle, result: CompileResult, changed_at: float) -> None:
        session = handle.session
        before = (dict(session.desired_routes), session.selected)
        session.problems = {key.partition("/")[2]: msgs for key, msgs in result.problems.items()}
        session.selected = frozenset(k.partition("/")[2] for k in (*result.included, *result.problems))
        push = session.offer(result.config, changed_at)
        if push is not None:
            self._send(handle, push)
        # Always: even a recompile that changes nothing ends a pending period (route_sync changes).
        self._touch_routes(session, *before[0], *before[1])

    def _send(self, handle: SessionHandle, push: Push) -> None:
        self.pushes += 1
        handle.queue.put_nowait(push)

    def flush(self, namespace: str, changed_at: float | None = None) -> None:
        """Recompile ``namespace`` for its sessions now (the debouncer calls this).

        One compile per distinct (selected routes, region): labels only decide which routes a pod
        gets, so pods with unique labels (StatefulSet pod names, say) still share compiles.
        """
        handles = list(self._sessions.get(namespace, {}).values())
        if not handles:
            return
        view = self._index.view(namespace)
        when = self._clock() if changed_at is None else changed_at
        selected: dict[frozenset[tuple[str, str]], tuple[str, ...]] = {}
        compiled: dict[tuple[tuple[str, ...], str], CompileResult] = {}
        for handle in handles:
            labels = handle.session.labels
            label_key = frozenset(labels.items())
            routes = selected.get(label_key)
            if routes is None:
                routes = selected[label_key] = tuple(
                    str(r.metadata.get("name"))
                    for r in view.routes
                    if selector_matches(r.spec.workload_selector, labels)
                )
            key = (routes, handle.session.region)
            result = compiled.get(key)
            if result is None:
                result = compiled[key] = self._compile(view, labels, handle.session.region)
            self._offer(handle, result, when)

    # -- debouncing index changes ------------------------------------------------------------------

    def _on_change(self, namespace: str) -> None:
        """Index listener; kopf may call it from a handler thread."""
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._mark_dirty(namespace)
        else:
            self._loop.call_soon_threadsafe(self._mark_dirty, namespace)

    def _mark_dirty(self, namespace: str) -> None:
        now = self._clock()
        self._first_change.setdefault(namespace, now)
        self._last_change[namespace] = now
        self._wake.set()

    async def _debouncer(self) -> None:
        while True:
            if not self._first_change:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = self._clock()
            due = {
                ns: min(self._last_change[ns] + self._debounce, first + self._max_delay)
                for ns, first in self._first_change.items()
            }
            ready = [ns for ns, at in due.items() if at <= now]
            if not ready or not self._ready.is_set():
                self._wake.clear()
                wait = max(0.0, min(due.values()) - now) if self._ready.is_set() else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                continue
            for ns in ready:
                first = self._first_change.pop(ns)
                self._last_change.pop(ns, None)
                try:
                    self.flush(ns, changed_at=first)
                except Exception:
                    log.exception("recompiling namespace %s failed", ns)
            await asyncio.sleep(0)

    # -- route status ------------------------------------------------------------------------------

    def on_route_sync(self, listener: RouteListener) -> None:
        """Call ``listener(namespace, route)`` (coalesced) when :meth:`route_sync` may have changed."""
        self._listeners.append(listener)

    def _touch_routes(self, session: Session, *extra: str) -> None:
        if not self._listeners:
            return
        ns = session.identity.namespace
        for route in {*session.desired_routes, *session.selected, *extra}:
            self._dirty_routes.add((ns, route))

    async def _notifier(self) -> None:
        while True:
            await asyncio.sleep(self._notify_seconds)
            dirty, self._dirty_routes = self._dirty_routes, set()
            for namespace, route in sorted(dirty):
                for listener in self._listeners:
                    try:
                        listener(namespace, route)
                    except Exception:
                        log.exception("route sync listener failed for %s/%s", namespace, route)

    def route_sync(self, namespace: str, name: str) -> RouteSync:
        """Sidecars the route selects now (by its current selector), and how many run its latest
        config: the compiled generation must be the indexed one, and no recompile may be pending."""
        route = self._index.route(namespace, name)
        if route is None:
            return RouteSync()
        generation = route.metadata.get("generation")
        generation = generation if isinstance(generation, int) else 0
        pending = namespace in self._first_change  # a change not compiled yet (debouncing)
        matched = synced = rejected = 0
        versions: Counter[str] = Counter()
        errors: dict[str, None] = {}  # ordered and de-duplicated
        for handle in self._sessions.get(namespace, {}).values():
            session = handle.session
            if not selector_matches(route.spec.workload_selector, session.labels):
                continue
            matched += 1
            errors.update(dict.fromkeys(session.problems.get(name, [])))
            if session.desired is None or session.desired_routes.get(name) != generation:
                continue
            versions[session.desired.version] += 1
            if session.synced and not pending:
                synced += 1
            elif session.rejected(name):
                rejected += 1
                errors[f"sidecar rejected {session.rejected_version}: {session.rejected_message}"] = None
        version = min(versions, key=lambda v: (-versions[v], v)) if versions else ""
        return RouteSync(
            matched=matched, synced=synced, rejected=rejected, version=version, errors=tuple(errors)
        )
