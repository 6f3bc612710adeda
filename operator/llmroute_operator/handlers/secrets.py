"""Secrets: their decoded data into the index, so the hub can push credentials and rotations.

Only ``Opaque`` Secrets of the watched namespaces are indexed (API keys and AWS key pairs are
Opaque): ServiceAccount tokens, TLS, docker-config and Helm release Secrets are filtered out before
any handler runs. All Opaque Secrets are indexed rather than only the referenced ones, so a route
that starts referencing an existing Secret is accepted at once, with no extra read and no race between
that read and a rotation. A rotation updates the index (which makes the hub recompile and push the new
credentials) and re-checks the routes that reference the Secret; an unchanged Secret notifies nobody.
Values are never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from ..index import ClusterIndex
from ..metrics import OperatorMetrics
from .routes import RouteBook
from .sync import InitialSync

__all__ = ["decode_secret", "is_indexed_secret", "register_secret_handlers"]

log = logging.getLogger(__name__)


def is_indexed_secret(body: Mapping[str, Any]) -> bool:
    return str(body.get("type") or "Opaque") == "Opaque"


def decode_secret(body: Mapping[str, Any]) -> dict[str, str]:
    """``data`` base64-decoded (keys that are not UTF-8 text are left out: they cannot be API keys)."""
    out: dict[str, str] = {}
    for key, value in (body.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
    for key, value in (body.get("stringData") or {}).items():  # only in admission requests
        out[str(key)] = str(value)
    return out


def register_secret_handlers(
    registry: kopf.OperatorRegistry,
    *,
    index: ClusterIndex,
    routes: RouteBook,
    initial: InitialSync,
    metrics: OperatorMetrics,
) -> None:
    def opaque(body: kopf.Body, **_: Any) -> bool:
        return is_indexed_secret(body)

    @kopf.on.event("", "v1", "secrets", registry=registry, when=opaque, id="secret-index")
    async def secret_event(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        started = time.perf_counter()
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            if event.get("type") == "DELETED":
                index.put_secret(namespace, name, None)
            else:
                index.put_secret(namespace, name, decode_secret(body))
            routes.secrets_changed(namespace, name)
            metrics.reconciled("Secret", "ok", time.perf_counter() - started)
        except Exception:
            metrics.reconciled("Secret", "error", time.perf_counter() - started)
            log.exception("Secret %s/%s: handling the watch event failed", namespace, name)
        finally:
            initial.seen("secrets", namespace, name)
