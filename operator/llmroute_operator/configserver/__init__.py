"""The config server: pushes compiled ``RouterConfig`` to sidecars over gRPC/TLS (xDS-like).

Neighbours: the :class:`~llmroute_operator.index.ClusterIndex` (what to compile), the budget service
(``budgets/``, which the same gRPC server exposes as UsageReporting and Allowances), and the kopf
handlers, which read :meth:`ConfigHub.route_sync` to write ``LLMRoute.status.sidecars``.

Modules: ``auth`` (who a caller is: TokenReview, claims vs. identity), ``guard`` (what an authenticated
caller may still not send: malformed protobuf, another pod's sidecar id, impossible numbers),
``sessions`` (the pure per-sidecar ACK/NACK/backpressure state machine), ``hub`` (sessions, debounced
recompiles, sync counts), ``server`` (the gRPC transport: streams, TLS and its reload, metadata).

How ``app.py`` composes it (every argument keyword-only)::

    hub = ConfigHub(index=index, settings=settings, kube=kube, observer=metrics_or_None)
    await hub.start()                     # subscribes to the index; debounce task
    server = ConfigServer(settings=settings, hub=hub, budgets=budgets, kube=kube,
                          tls=ServerTls(cert_pem=..., key_pem=...))   # or tls=None: settings.tls_cert/key
    port = await server.start()           # binds settings.config_addr (or addr=...); returns the port
    server.update_tls(ServerTls(...))     # a rotated certificate: new handshakes get it (tls_reload.py)
    hub.mark_ready()                      # after the handlers' initial listing fed the index
    ...
    await server.stop(grace=5.0)
    await hub.stop()

``kube`` must provide (see :class:`~.auth.IdentityApi`)::

    async def token_review(token: str, audience: str) -> TokenReviewResult  # kube.KubeClient has it
    async def get_pod(namespace: str, name: str) -> dict[str, Any]           # LookupError if missing
    async def get_node(name: str) -> dict[str, Any]                          # optional (region label)

``hub.route_sync(namespace, name) -> contracts.RouteSync``; ``hub.on_route_sync(listener)`` calls
``listener(namespace, route_name)`` whenever those counts change (for the status writer).
"""

from __future__ import annotations

from .auth import AuthError, Identity, IdentityApi, TokenAuthenticator
from .hub import ConfigHub, HubObserver
from .server import ConfigServer, ServerTls

__all__ = [
    "AuthError",
    "ConfigHub",
    "ConfigServer",
    "HubObserver",
    "Identity",
    "IdentityApi",
    "ServerTls",
    "TokenAuthenticator",
]
