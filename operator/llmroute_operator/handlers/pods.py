"""Injected pods: a label change reaches the pod's sidecar as a new config, without a reconnect.

A route's ``workloadSelector`` matches pod labels, and the config hub compiles each sidecar's config
from the labels of its pod, read when the sidecar connects. This module watches the pods the
injection webhook marked (label ``llmroute.io/sidecar=injected``, a server-side selector, so the
operator never lists every pod of the cluster) and hands every label change to
:meth:`~llmroute_operator.configserver.hub.ConfigHub.relabel`, which recompiles and pushes. Pods
injected by an operator older than the label keep the previous behaviour: their labels apply when
the sidecar reconnects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import kopf

from ..metrics import OperatorMetrics
from ..webhooks.inject import SIDECAR_LABEL

__all__ = ["WATCH_SELECTOR", "register_pod_handlers"]

log = logging.getLogger(__name__)

#: The server-side label selector of the pod watch (kopf's ``settings.watching.label_selectors``).
WATCH_SELECTOR = f"{SIDECAR_LABEL}=injected"


class Relabel(Protocol):
    def relabel(self, namespace: str, pod_name: str, pod_uid: str, labels: Mapping[str, Any]) -> int: ...


def register_pod_handlers(
    registry: kopf.OperatorRegistry,
    settings: kopf.OperatorSettings,
    *,
    hub: Relabel,
    metrics: OperatorMetrics,
) -> None:
    """Watch injected pods (only those: ``settings`` gets the label selector) and relabel sessions."""
    settings.watching.label_selectors[("v1", "pods")] = WATCH_SELECTOR

    @kopf.on.event("", "v1", "pods", registry=registry, labels={SIDECAR_LABEL: "injected"}, id="pod-labels")
    async def pod_event(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        if event.get("type") == "DELETED":
            return  # its stream ends with the sidecar; the hub forgets it then
        started = time.perf_counter()
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            hub.relabel(namespace, name, str(meta.get("uid") or ""), meta.get("labels") or {})
            metrics.reconciled("Pod", "ok", time.perf_counter() - started)
        except Exception:
            metrics.reconciled("Pod", "error", time.perf_counter() - started)
            log.exception("Pod %s/%s: handling the watch event failed", namespace, name)
