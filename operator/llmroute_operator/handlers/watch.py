"""One kopf watch handler shape for our kinds: every event updates a book, nothing else.

``routes.py`` and ``budgets.py`` keep per-kind books (parse, validate, index); this module registers the
``@kopf.on.event`` handler that feeds them, times it for the operator metrics, and tells the initial
sync (``sync.py``) which objects the first listing held. Event handlers, not create/update handlers,
so no finalizers or kopf annotations land on user objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import kopf

from ..metrics import OperatorMetrics
from .sync import InitialSync

__all__ = ["Book", "register_index_watch"]

log = logging.getLogger(__name__)
GROUP, VERSION = "llmroute.io", "v1alpha1"


class Book(Protocol):
    def observe(self, body: kopf.Body) -> None: ...

    def forget(self, namespace: str, name: str) -> None: ...


def register_index_watch(
    registry: kopf.OperatorRegistry,
    *,
    plural: str,
    kind: str,
    book: Book,
    initial: InitialSync,
    metrics: OperatorMetrics,
) -> None:
    """Register the watch handler of ``plural`` that feeds ``book``."""

    @kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"{kind.lower()}-index")
    async def on_event(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        started = time.perf_counter()
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            if event.get("type") == "DELETED":
                book.forget(namespace, name)
            else:
                book.observe(body)
            metrics.reconciled(kind, "ok", time.perf_counter() - started)
        except Exception:
            metrics.reconciled(kind, "error", time.perf_counter() - started)
            log.exception("%s %s/%s: handling the watch event failed", kind, namespace, name)
        finally:
            initial.seen(plural, namespace, name)
