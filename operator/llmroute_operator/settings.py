"""The operator's settings: flags and environment, resolved once into a frozen value.

``__main__.py`` parses the command line into :class:`OperatorSettings`; ``app.py`` and every part it
starts (kopf handlers, webhooks, the config server, budgets) receive it as a keyword argument instead
of reading globals. Every flag also reads an ``LLMROUTE_*`` environment variable, so the Helm chart can
configure the Deployment with env alone.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OperatorSettings", "SidecarTemplate", "build_parser", "settings_from_args"]


@dataclass(frozen=True)
class SidecarTemplate:
    """What the injection webhook puts into pods."""

    image: str = "ghcr.io/llmroute/sidecar:0.1.0"  # the chart sets its own appVersion tag
    image_pull_policy: str = "IfNotPresent"
    cpu_request: str = "50m"
    memory_request: str = "64Mi"
    cpu_limit: str = "1"
    memory_limit: str = "256Mi"
    http_port: int = 14080
    grpc_port: int = 14081
    admin_port: int = 14090
    token_audience: str = "llmroute"
    token_expiration_seconds: int = 3600
    redis_url: str = ""  # shared cache and rate-limit buckets (LLMROUTE_REDIS_URL); "" = per sidecar
    otlp_endpoint: str = ""  # OpenTelemetry traces of requests (LLMROUTE_OTLP_ENDPOINT); "" = off


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator needs to know to run."""

    namespaces: tuple[str, ...] = ()  # empty: the whole cluster
    standalone: bool = False  # no leader election: a single replica (tests and the demo)
    # Leader election (leadership.py): a Lease in the operator's namespace, client-go's timings.
    lease_name: str = "llmroute-operator"
    lease_namespace: str = "llmroute-system"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    lease_retry: float = 2.0
    # Replicas reach the leader (configserver/forward.py): the address this replica advertises when it
    # leads, the TLS name peers verify, and the token it presents (a projected ServiceAccount token
    # for the ``llmroute`` audience, bound to its Pod). Peers are Pods of ``peer_service_account``
    # in ``lease_namespace``.
    advertise_address: str = ""
    peer_server_name: str = ""
    peer_token_file: Path | None = None
    peer_service_account: str = "llmroute-operator"
    dev: bool = False
    ca_out: Path | None = None
    webhook_addr: str = ":14443"
    webhook_host: str | None = None  # the host name/IP the API server dials (dev: 127.0.0.1)
    webhook_service: str | None = None  # "namespace/name" of the webhook Service in a cluster
    config_addr: str = ":14100"
    config_host: str = ""  # the address sidecars dial (written into injected pods)
    metrics_addr: str = ":14091"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_reload_seconds: float = 5.0  # how often the TLS files are checked for a new certificate
    debounce_seconds: float = 0.1
    sidecar: SidecarTemplate = field(default_factory=SidecarTemplate)

    def watches_namespace(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmroute-operator",
        description="The llmroute operator: reconciles LLMRoute/LLMBudget, pushes config to sidecars, injects sidecars.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        default=None,
        help="watch only this namespace (repeatable; default: all) [LLMROUTE_NAMESPACES, comma-separated]",
    )
    parser.add_argument(
        "--leader-lease",
        "--peering",
        dest="leader_lease",
        default=_env("LLMROUTE_LEADER_LEASE", _env("LLMROUTE_PEERING", "llmroute-operator")),
        help="name of the coordination.k8s.io Lease the replicas elect their leader with; replicas "
        "sharing it are peers (--peering is the same flag) [LLMROUTE_LEADER_LEASE]",
    )
    parser.add_argument(
        "--leader-lease-namespace",
        default=_env("LLMROUTE_LEADER_LEASE_NAMESPACE", _env("POD_NAMESPACE", "llmroute-system")),
        help="namespace of that Lease, and of the peer replicas' ServiceAccount (default: the pod's "
        "namespace) [LLMROUTE_LEADER_LEASE_NAMESPACE]",
    )
    parser.add_argument(
        "--leader-lease-seconds",
        type=float,
        default=float(_env("LLMROUTE_LEADER_LEASE_SECONDS", "15") or 15),
        help="how long a leader that stopped renewing keeps the Lease before a peer takes it (a "
        "clean shutdown releases it at once) [LLMROUTE_LEADER_LEASE_SECONDS]",
    )
    parser.add_argument(
        "--advertise-address",
        default=_env("LLMROUTE_ADVERTISE_ADDRESS", ""),
        help="host:port of this replica's config server as its peers dial it when it leads "
        "(default: $POD_IP and the config port) [LLMROUTE_ADVERTISE_ADDRESS]",
    )
    parser.add_argument(
        "--peer-server-name",
        default=_env("LLMROUTE_PEER_SERVER_NAME", ""),
        help="TLS name peers verify on the leader's certificate (default: the host of --config-host) "
        "[LLMROUTE_PEER_SERVER_NAME]",
    )
    parser.add_argument(
        "--peer-token-file",
        default=_env("LLMROUTE_PEER_TOKEN_FILE"),
        help="projected ServiceAccount token (audience llmroute, bound to this Pod) presented to the "
        "leader; re-read on every use [LLMROUTE_PEER_TOKEN_FILE]",
    )
    parser.add_argument(
        "--peer-service-account",
        default=_env("LLMROUTE_PEER_SERVICE_ACCOUNT", _env("POD_SERVICE_ACCOUNT", "llmroute-operator")),
        help="ServiceAccount of the operator's own Pods: the only callers the leader accepts peer "
        "reports from [LLMROUTE_PEER_SERVICE_ACCOUNT]",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="run without leader election (one replica only)"
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="serve webhooks and the config server on 127.0.0.1 with a self-signed CA and register the webhooks itself",
    )
    parser.add_argument(
        "--ca-out",
        default=_env("LLMROUTE_CA_OUT"),
        help="with --dev: write the CA certificate here (sidecars use it as --ca-file)",
    )
    parser.add_argument(
        "--webhook-addr",
        default=_env("LLMROUTE_WEBHOOK_ADDR", ":14443"),
        help="admission webhook HTTPS host:port [LLMROUTE_WEBHOOK_ADDR]",
    )
    parser.add_argument(
        "--webhook-service",
        default=_env("LLMROUTE_WEBHOOK_SERVICE"),
        help="namespace/name of the webhook Service [LLMROUTE_WEBHOOK_SERVICE]",
    )
    parser.add_argument(
        "--config-addr",
        default=_env("LLMROUTE_CONFIG_ADDR", ":14100"),
        help="config server gRPC/TLS host:port [LLMROUTE_CONFIG_ADDR]",
    )
    parser.add_argument(
        "--config-host",
        default=_env("LLMROUTE_CONFIG_HOST", ""),
        help="address sidecars dial, host:port [LLMROUTE_CONFIG_HOST]",
    )
    parser.add_argument(
        "--metrics-addr",
        default=_env("LLMROUTE_METRICS_ADDR", ":14091"),
        help="Prometheus metrics host:port [LLMROUTE_METRICS_ADDR]",
    )
    parser.add_argument(
        "--tls-cert",
        default=_env("LLMROUTE_TLS_CERT"),
        help="serving certificate (config server, webhooks) [LLMROUTE_TLS_CERT]",
    )
    parser.add_argument("--tls-key", default=_env("LLMROUTE_TLS_KEY"), help="serving key [LLMROUTE_TLS_KEY]")
    parser.add_argument(
        "--tls-ca", default=_env("LLMROUTE_TLS_CA"), help="CA of the serving certificate [LLMROUTE_TLS_CA]"
    )
    parser.add_argument(
        "--tls-reload-interval",
        type=float,
        default=float(_env("LLMROUTE_TLS_RELOAD_INTERVAL", "5") or 5),
        help="seconds between checks of the TLS files; a new consistent set is served without a "
        "restart [LLMROUTE_TLS_RELOAD_INTERVAL]",
    )
    parser.add_argument(
        "--sidecar-image",
        default=_env("LLMROUTE_SIDECAR_IMAGE", SidecarTemplate.image),
        help="image injected as the sidecar [LLMROUTE_SIDECAR_IMAGE]",
    )
    parser.add_argument(
        "--sidecar-redis-url",
        default=_env("LLMROUTE_SIDECAR_REDIS_URL", ""),
        help="Redis injected sidecars share for cache hits and rate-limit buckets across replicas, "
        "e.g. redis://redis.llmroute-system:6379/0; empty: each sidecar on its own "
        "[LLMROUTE_SIDECAR_REDIS_URL]",
    )
    parser.add_argument(
        "--sidecar-otlp-endpoint",
        default=_env("LLMROUTE_SIDECAR_OTLP_ENDPOINT", ""),
        help="OTLP/gRPC endpoint injected sidecars send traces of requests to, e.g. "
        "http://otel-collector.observability:4317; empty: no tracing [LLMROUTE_SIDECAR_OTLP_ENDPOINT]",
    )
    parser.add_argument(
        "--log-level",
        default=_env("LLMROUTE_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    namespaces = args.namespaces or [n for n in (_env("LLMROUTE_NAMESPACES") or "").split(",") if n]
    dev = bool(args.dev)
    return OperatorSettings(
        namespaces=tuple(namespaces),
        standalone=bool(args.standalone) or dev,
        lease_name=args.leader_lease,
        lease_namespace=args.leader_lease_namespace,
        lease_duration=max(2.0, args.leader_lease_seconds),
        renew_deadline=max(1.0, args.leader_lease_seconds * 2 / 3),
        lease_retry=max(0.5, min(2.0, args.leader_lease_seconds / 7.5)),
        advertise_address=args.advertise_address,
        peer_server_name=args.peer_server_name,
        peer_token_file=Path(args.peer_token_file) if args.peer_token_file else None,
        peer_service_account=args.peer_service_account,
        dev=dev,
        ca_out=Path(args.ca_out) if args.ca_out else None,
        webhook_addr="127.0.0.1:14443" if dev and args.webhook_addr == ":14443" else args.webhook_addr,
        webhook_host="127.0.0.1" if dev else None,
        webhook_service=args.webhook_service,
        config_addr="127.0.0.1:14100" if dev and args.config_addr == ":14100" else args.config_addr,
        config_host=args.config_host,
        metrics_addr="127.0.0.1:14091" if dev and args.metrics_addr == ":14091" else args.metrics_addr,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        tls_ca=Path(args.tls_ca) if args.tls_ca else None,
        tls_reload_seconds=args.tls_reload_interval,
        sidecar=SidecarTemplate(
            image=args.sidecar_image,
            redis_url=args.sidecar_redis_url,
            otlp_endpoint=args.sidecar_otlp_endpoint,
        ),
    )
