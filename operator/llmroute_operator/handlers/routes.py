"""LLMRoute: from the watch into the :class:`~llmroute_operator.index.ClusterIndex`, and status.

:class:`RouteBook` remembers every route the watch delivered (parsed or not) with its problems
(``validation.py``); only *accepted* routes (valid spec, Secrets present) are in the index, so the
config hub compiles exactly those into sidecar configs. A route that stops being accepted (its Secret
was deleted, say) leaves the index and the sidecars; deleting a route removes it the same way. Every
change marks the route for the status writer (``handlers/status.py``), which writes ``Accepted``,
``Programmed`` and the rest from :meth:`RouteBook.desired_status`.

The kopf side is one ``@kopf.on.event`` handler: it sees every watch event, including the initial
listing and deletions, and writes nothing to the object (no finalizers or kopf annotations), so the
operator never blocks a ``kubectl delete``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from llmroute_proto.api.route import LLMRoute

from ..conditions import Transition, route_status
from ..contracts import RouteSyncSource
from ..index import ClusterIndex
from ..metrics import OperatorMetrics
from ..validation import Problem, parse_route, referenced_secrets, validate_route
from .status import EventSpec, Observed, route_events
from .sync import InitialSync
from .watch import register_index_watch

__all__ = ["RouteBook", "RouteEntry", "RouteStatus", "register_route_handlers"]

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "llmroute.io", "v1alpha1", "llmroutes"
Key = tuple[str, str]


@dataclass
class RouteEntry:
    """What the operator knows about one LLMRoute object."""

    namespace: str
    name: str
    uid: str = ""
    generation: int | None = None
    status: dict[str, Any] = field(default_factory=dict)  # as last observed
    route: LLMRoute | None = None
    problems: list[Problem] = field(default_factory=list)
    parse_problems: list[Problem] = field(default_factory=list)

    def involved(self) -> dict[str, Any]:
        """The object reference for Events."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LLMRoute",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


class RouteBook:
    """Every observed LLMRoute, its problems, and the accepted subset mirrored into the index."""

    def __init__(self, *, index: ClusterIndex, on_change: Callable[[str, str], None] | None = None) -> None:
        self._index = index
        self._entries: dict[Key, RouteEntry] = {}
        self._indexed: set[Key] = set()
        self._on_change: list[Callable[[str, str], None]] = [on_change] if on_change else []
        self._on_namespace: list[Callable[[str], None]] = []

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """``listener(namespace, name)`` after a route's problems or spec changed (status writer)."""
        self._on_change.append(listener)

    def on_namespace(self, listener: Callable[[str], None]) -> None:
        """``listener(namespace)`` after the routes of a namespace changed (budget validation)."""
        self._on_namespace.append(listener)

    # -- feeding ------------------------------------------------------------------------------------

    def observe(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        generation = meta.get("generation")
        entry = self._entries.get(key)
        status = dict(obj.get("status") or {})
        if entry is not None and entry.generation == generation and entry.uid == meta.get("uid"):
            entry.status = status  # a status write (ours) echoing back: nothing to re-check
            return
        route, parse_problems = parse_route(obj)
        entry = RouteEntry(
            namespace=key[0],
            name=key[1],
            uid=str(meta.get("uid") or ""),
            generation=generation if isinstance(generation, int) else None,
            status=status,
            route=route,
            parse_problems=parse_problems,
        )
        self._entries[key] = entry
        self._check(entry)
        self._namespace_changed(key[0])

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if self._entries.pop(key, None) is None:
            return
        if key in self._indexed:
            self._indexed.discard(key)
            self._index.put_route(namespace, name, None)
        self._namespace_changed(namespace)

    def secrets_changed(self, namespace: str, secret: str) -> None:
        """Re-check the routes of ``namespace`` that reference ``secret``."""
        for entry in [e for e in self._entries.values() if e.namespace == namespace]:
            if entry.route is not None and secret in referenced_secrets(entry.route):
                self._check(entry)

    def _check(self, entry: RouteEntry) -> None:
        key = (entry.namespace, entry.name)
        if entry.route is None:
            entry.problems = list(entry.parse_problems)
        else:
            secrets = {}
            for name in referenced_secrets(entry.route):
                found = self._index.secret(entry.namespace, name)
                if found is not None:
                    secrets[name] = found.data
            entry.problems = validate_route(entry.route, secrets=secrets)
        if entry.route is not None and not entry.problems:
            if self._index.route(*key) != entry.route:
                self._index.put_route(entry.namespace, entry.name, entry.route)
            self._indexed.add(key)
        elif key in self._indexed:
            self._indexed.discard(key)
            self._index.put_route(entry.namespace, entry.name, None)
        for listener in self._on_change:
            listener(*key)

    def _namespace_changed(self, namespace: str) -> None:
        for listener in self._on_namespace:
            listener(namespace)

    # -- reading ------------------------------------------------------------------------------------

    def entry(self, namespace: str, name: str) -> RouteEntry | None:
        return self._entries.get((namespace, name))

    def keys(self) -> list[Key]:
        return list(self._entries)

    def routes(self, namespace: str) -> list[LLMRoute]:
        """The parseable routes of a namespace, accepted or not (what budgets are judged against)."""
        return [e.route for e in self._entries.values() if e.namespace == namespace and e.route is not None]

    def desired_status(
        self,
        namespace: str,
        name: str,
        *,
        sync: RouteSyncSource | None,
        now: dt.datetime,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        entry = self._entries.get((namespace, name))
        if entry is None:
            return None
        accepted = entry.route is not None and not entry.problems
        return route_status(
            route=entry.route,
            generation=entry.generation,
            problems=entry.problems,
            sync=sync.route_sync(namespace, name) if sync is not None and accepted else None,
            existing=previous if previous is not None else entry.status,
            now=now,
        )


def register_route_handlers(
    registry: kopf.OperatorRegistry,
    *,
    book: RouteBook,
    initial: InitialSync,
    metrics: OperatorMetrics,
) -> None:
    """Register the LLMRoute watch handler into ``registry``."""
    register_index_watch(
        registry, plural="llmroutes", kind="LLMRoute", book=book, initial=initial, metrics=metrics
    )


class RouteStatus:
    """The status writer's view of routes (``handlers/status.py``)."""

    def __init__(self, *, book: RouteBook, sync: Callable[[], RouteSyncSource | None]) -> None:
        self._book = book
        self._sync = sync

    def keys(self) -> list[Key]:
        return self._book.keys()

    def observed(self, namespace: str, name: str) -> Observed | None:
        entry = self._book.entry(namespace, name)
        return Observed(entry.uid, entry.status, entry.involved()) if entry is not None else None

    def desired(self, namespace: str, name: str, previous: Mapping[str, Any]) -> dict[str, Any] | None:
        return self._book.desired_status(
            namespace, name, sync=self._sync(), now=dt.datetime.now(dt.UTC), previous=previous
        )

    def events(self, changes: Sequence[Transition]) -> list[EventSpec]:
        return route_events(changes)
