"""The operator's in-memory view of the cluster: routes, budgets and Secrets, per namespace.

kopf handlers (``handlers/``) keep it current from their watches; the config hub (``configserver/``)
compiles sidecar configs from it and is told about every change through :meth:`ClusterIndex.subscribe`;
the budget service reads and updates budget state in it. Keeping one index means the compiler sees a
consistent picture and the Kubernetes API is read once per change, not once per sidecar. No I/O here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from llmroute_proto.api.budget import LLMBudget
from llmroute_proto.api.loader import SecretData
from llmroute_proto.api.route import LLMRoute

__all__ = ["ClusterIndex", "NamespaceView"]

log = logging.getLogger(__name__)

Listener = Callable[[str], None]


@dataclass(frozen=True)
class NamespaceView:
    """A consistent snapshot of one namespace (copies: safe to keep while the index changes)."""

    namespace: str
    routes: tuple[LLMRoute, ...] = ()
    budgets: tuple[LLMBudget, ...] = ()
    secrets: tuple[SecretData, ...] = ()
    revision: int = 0


@dataclass
class _Namespace:
    routes: dict[str, LLMRoute] = field(default_factory=dict)
    budgets: dict[str, LLMBudget] = field(default_factory=dict)
    secrets: dict[str, SecretData] = field(default_factory=dict)
    revision: int = 0


class ClusterIndex:
    """Routes, budgets and Secrets by namespace, with change notifications."""

    def __init__(self) -> None:
        self._namespaces: dict[str, _Namespace] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(namespace)`` after every change in a namespace."""
        self._listeners.append(listener)

    def _touch(self, namespace: str) -> None:
        self._namespaces[namespace].revision += 1
        for listener in self._listeners:
            try:
                listener(namespace)
            except Exception:  # a listener's bug must not break the watch that fed us
                log.exception("index listener failed for namespace %s", namespace)

    def _ns(self, namespace: str) -> _Namespace:
        return self._namespaces.setdefault(namespace, _Namespace())

    def put_route(self, namespace: str, name: str, route: LLMRoute | None) -> None:
        """Add, replace or (with ``None``) remove a route."""
        ns = self._ns(namespace)
        if route is None:
            if ns.routes.pop(name, None) is None:
                return
        else:
            ns.routes[name] = route
        self._touch(namespace)

    def put_budget(self, namespace: str, name: str, budget: LLMBudget | None) -> None:
        ns = self._ns(namespace)
        if budget is None:
            if ns.budgets.pop(name, None) is None:
                return
        else:
            ns.budgets[name] = budget
        self._touch(namespace)

    def put_secret(self, namespace: str, name: str, data: Mapping[str, str] | None) -> None:
        """Add, replace or remove a Secret's decoded data; an unchanged Secret notifies nobody."""
        ns = self._ns(namespace)
        if data is None:
            if ns.secrets.pop(name, None) is None:
                return
        else:
            new = SecretData(namespace=namespace, name=name, data=dict(data))
            if ns.secrets.get(name) == new:
                return
            ns.secrets[name] = new
        self._touch(namespace)

    def view(self, namespace: str) -> NamespaceView:
        ns = self._namespaces.get(namespace)
        if ns is None:
            return NamespaceView(namespace=namespace)
        return NamespaceView(
            namespace=namespace,
            routes=tuple(ns.routes[k] for k in sorted(ns.routes)),
            budgets=tuple(ns.budgets[k] for k in sorted(ns.budgets)),
            secrets=tuple(ns.secrets[k] for k in sorted(ns.secrets)),
            revision=ns.revision,
        )

    def namespaces(self) -> list[str]:
        return sorted(self._namespaces)

    def route(self, namespace: str, name: str) -> LLMRoute | None:
        ns = self._namespaces.get(namespace)
        return ns.routes.get(name) if ns else None

    def secret(self, namespace: str, name: str) -> SecretData | None:
        ns = self._namespaces.get(namespace)
        return ns.secrets.get(name) if ns else None
