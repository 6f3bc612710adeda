"""The admin server (``:14090``): ``/metrics``, ``/healthz``, ``/readyz`` and ``/config_dump``.

``/readyz`` turns ready once a config is held, so a pod does not receive traffic before the sidecar
can route it. ``/config_dump`` shows the running config with every secret field redacted
(``config/redact.py``), plus the version and the last rejection, for debugging a route.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import web
from .config.redact import redacted_dict
from .config.store import ConfigStore
from .metrics import Metrics
from .openai_api.responses import render_http_error
from .usage import UsageBuffer

__all__ = ["make_admin_app"]

STORE: web.AppKey[ConfigStore] = web.AppKey("store", ConfigStore)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
USAGE: web.AppKey[UsageBuffer] = web.AppKey("usage", UsageBuffer)
UNACKED: web.AppKey[Callable[[], int]] = web.AppKey("unacked")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    store = request.app[STORE]
    if store.current is None:
        reason = store.last_error or "no config received yet"
        return web.Response(status=503, text=f"not ready: {reason}\n")
    return web.Response(text=f"ready: config {store.version}\n")


async def config_dump(request: web.Request) -> web.Response:
    store = request.app[STORE]
    usage = request.app[USAGE]
    snapshot = store.current
    body = {
        "version": store.version,
        "last_error": store.last_error,
        "swaps": store.swaps,
        "usage_buffered": len(usage),
        "usage_dropped": usage.dropped,
        # Records sent to the operator and not acknowledged yet (0 in standalone mode).
        "usage_unacked": request.app[UNACKED](),
        "config": redacted_dict(snapshot.config) if snapshot else None,
    }
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_INDENT_2), content_type="application/json")


def make_admin_app(
    store: ConfigStore, metrics_: Metrics, usage: UsageBuffer, unacked: Callable[[], int] = lambda: 0
) -> web.Application:
    app = web.Application(error_renderer=render_http_error)
    app[UNACKED] = unacked
    app[STORE] = store
    app[METRICS] = metrics_
    app[USAGE] = usage
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/config_dump", config_dump)
    return app
