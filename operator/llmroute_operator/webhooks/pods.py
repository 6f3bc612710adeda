"""The mutating webhook on Pod CREATE: sidecar injection (the logic is in ``inject.py``).

It reads the labels of the pod's namespace (opt-in by label), asks :func:`inject.plan` what to do,
and returns the plan as kopf's patch (kopf turns it into the JSON patch of the admission response) with
the plan's warnings, which ``kubectl`` prints. A malformed pod is refused with the plan's message.
Before injecting, it makes sure the pod's namespace has the ``llmroute-ca`` ConfigMap with the
operator's CA (not on dry runs: the webhook declares ``sideEffects: NoneOnDryRun``).

Registered with ``failurePolicy: Ignore``: kopf's managed configurations cannot carry a namespace
selector, so this webhook sees every Pod CREATE in the cluster, and an operator outage must not stop
the cluster from creating pods. Pods created while the operator is down start without a sidecar (and
``kubectl get pod -L`` / the missing ``llmroute.io/injected`` annotation shows it); restart them to
inject. Pods in namespaces the operator does not watch are left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from ..kube import KubeClient, KubeError
from ..metrics import OperatorMetrics
from ..settings import OperatorSettings
from .inject import CA_CONFIGMAP, CA_KEY, InjectionConfig, InjectionRefused, plan

__all__ = ["CaPublisher", "register_injection_webhook"]

log = logging.getLogger(__name__)


class CaPublisher:
    """Keeps the ``llmroute-ca`` ConfigMap in the namespaces of injected pods."""

    def __init__(self, *, kube: KubeClient, ca_pem: str) -> None:
        self._kube = kube
        self._ca_pem = ca_pem
        self._done: set[str] = set()

    async def ensure(self, namespace: str) -> None:
        if namespace in self._done:
            return
        await self._kube.ensure_configmap(
            namespace,
            CA_CONFIGMAP,
            {CA_KEY: self._ca_pem},
            labels={"app.kubernetes.io/managed-by": "llmroute-operator"},
        )
        self._done.add(namespace)


def register_injection_webhook(
    registry: kopf.OperatorRegistry,
    *,
    settings: OperatorSettings,
    config: InjectionConfig,
    kube: KubeClient,
    ca: CaPublisher | None,
    metrics: OperatorMetrics,
) -> None:
    @kopf.on.mutate(
        "",
        "v1",
        "pods",
        id="inject-sidecar",
        operations=["CREATE"],
        ignore_failures=True,
        side_effects=True,
        registry=registry,
    )
    async def inject_sidecar(
        body: kopf.Body,
        patch: kopf.Patch,
        warnings: list[str],
        dryrun: bool,
        **_: Any,
    ) -> None:
        started = time.perf_counter()
        namespace = str(body.get("metadata", {}).get("namespace") or "")
        if not settings.watches_namespace(namespace):
            metrics.admitted("inject-sidecar", "allowed", time.perf_counter() - started)
            return
        labels: Mapping[str, str] = {}
        try:
            labels = (await kube.get_namespace(namespace)).get("metadata", {}).get("labels") or {}
        except KubeError as exc:
            log.warning("namespace %s could not be read for injection: %s", namespace, exc)
        try:
            decision = plan(body, namespace_labels=labels, config=config)
        except InjectionRefused as exc:
            metrics.injected("refused")
            metrics.admitted("inject-sidecar", "denied", time.perf_counter() - started)
            raise kopf.AdmissionError(f"llmroute sidecar injection: {exc}", code=400) from None
        if decision.action == "inject" and ca is not None and not dryrun:
            try:
                await ca.ensure(namespace)
            except KubeError as exc:  # the kubelet waits for the ConfigMap; do not lose the pod over it
                log.warning("could not publish the CA ConfigMap in %s: %s", namespace, exc)
                warnings.append(f"llmroute: the {CA_CONFIGMAP} ConfigMap could not be written: {exc}")
        for key, value in decision.patch.items():
            patch[key] = value
        warnings.extend(decision.warnings)
        metrics.injected("injected" if decision.action == "inject" else decision.action)
        metrics.admitted("inject-sidecar", "allowed", time.perf_counter() - started)
