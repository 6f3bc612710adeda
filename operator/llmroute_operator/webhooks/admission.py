"""The validating webhook for LLMRoute and LLMBudget (CREATE and UPDATE).

It refuses what ``validation.py`` finds, with messages that name the field, so ``kubectl apply``
prints e.g. ``admission webhook "validate-llmroute.llmroute.io" denied the request:
spec.backends[2].credentialsRef: Secret "openai" has no key "apiKey"``. An UPDATE that leaves the
spec as it was (labels, annotations, finalizers) is always allowed, so a route whose Secret went
missing can still be labelled or deleted. Objects outside the watched namespaces are allowed unseen.

Secrets are read from the index first; a Secret the index does not have (or that lacks the key) is
read from the API server before the webhook refuses, because ``kubectl apply -f`` of a Secret and a
route together creates the Secret only milliseconds earlier, possibly before its watch event arrived.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from llmroute_proto.api.route import LLMRoute

from ..handlers.routes import RouteBook
from ..handlers.secrets import decode_secret
from ..index import ClusterIndex
from ..kube import KubeClient, KubeError, NotFoundError
from ..metrics import OperatorMetrics
from ..settings import OperatorSettings
from ..validation import AWS_KEYS, parse_budget, parse_route, validate_budget, validate_route

__all__ = ["register_validation_webhooks", "resolve_secrets"]

log = logging.getLogger(__name__)

GROUP, VERSION = "llmroute.io", "v1alpha1"


def _needed_keys(route: LLMRoute, secret: str) -> set[str]:
    keys: set[str] = set()
    for backend in route.spec.backends:
        ref = backend.credentials_ref
        if ref is not None and ref.name == secret:
            keys |= set(AWS_KEYS) if backend.provider == "bedrock" else {ref.key}
    return keys


async def resolve_secrets(
    route: LLMRoute, namespace: str, *, index: ClusterIndex, kube: KubeClient
) -> dict[str, Mapping[str, str]]:
    """The data of every Secret the route references that exists (index first, then the API)."""
    found: dict[str, Mapping[str, str]] = {}
    names = sorted({b.credentials_ref.name for b in route.spec.backends if b.credentials_ref is not None})
    for name in names:
        indexed = index.secret(namespace, name)
        if indexed is not None and _needed_keys(route, name) <= set(indexed.data):
            found[name] = indexed.data
            continue
        try:
            found[name] = decode_secret(await kube.get_secret(namespace, name))
        except NotFoundError:
            continue
        except KubeError as exc:  # cannot tell (RBAC, API hiccup): do not refuse on a guess
            log.warning("Secret %s/%s could not be read for validation: %s", namespace, name, exc)
            found[name] = (
                indexed.data if indexed is not None else dict.fromkeys(_needed_keys(route, name), "")
            )
    return found


def _spec_unchanged(operation: str | None, old: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    return operation == "UPDATE" and old is not None and old.get("spec") == body.get("spec")


def register_validation_webhooks(
    registry: kopf.OperatorRegistry,
    *,
    settings: OperatorSettings,
    index: ClusterIndex,
    routes: RouteBook,
    kube: KubeClient,
    metrics: OperatorMetrics,
) -> None:
    """Register ``validate-llmroute`` and ``validate-llmbudget`` into ``registry``."""

    @kopf.on.validate(
        GROUP,
        VERSION,
        "llmroutes",
        id="validate-llmroute",
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    async def validate_llmroute(body: kopf.Body, **kwargs: Any) -> None:
        started = time.perf_counter()
        namespace = str(body.get("metadata", {}).get("namespace") or "")
        if not settings.watches_namespace(namespace) or _spec_unchanged(
            kwargs.get("operation"), kwargs.get("old"), body
        ):
            metrics.admitted("validate-llmroute", "allowed", time.perf_counter() - started)
            return
        route, problems = parse_route(body)
        if route is not None:
            secrets = await resolve_secrets(route, namespace, index=index, kube=kube)
            problems = validate_route(route, secrets=secrets)
        if problems:
            metrics.admitted("validate-llmroute", "denied", time.perf_counter() - started)
            raise kopf.AdmissionError("; ".join(str(p) for p in problems), code=422)
        metrics.admitted("validate-llmroute", "allowed", time.perf_counter() - started)

    @kopf.on.validate(
        GROUP,
        VERSION,
        "llmbudgets",
        id="validate-llmbudget",
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    async def validate_llmbudget(body: kopf.Body, **kwargs: Any) -> None:
        started = time.perf_counter()
        namespace = str(body.get("metadata", {}).get("namespace") or "")
        if not settings.watches_namespace(namespace) or _spec_unchanged(
            kwargs.get("operation"), kwargs.get("old"), body
        ):
            metrics.admitted("validate-llmbudget", "allowed", time.perf_counter() - started)
            return
        budget, problems = parse_budget(body)
        if budget is not None:
            problems = validate_budget(budget, routes=routes.routes(namespace))
        if problems:
            metrics.admitted("validate-llmbudget", "denied", time.perf_counter() - started)
            raise kopf.AdmissionError("; ".join(str(p) for p in problems), code=422)
        metrics.admitted("validate-llmbudget", "allowed", time.perf_counter() - started)
