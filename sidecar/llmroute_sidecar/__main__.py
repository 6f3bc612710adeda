"""``llmroute-sidecar``: the command a pod (or a developer) runs.

Two modes: ``--config PATH`` (standalone, from LLMRoute/LLMBudget/Secret YAML) or ``--operator
HOST:PORT --token-file F --ca-file F`` (config pushed by the operator's config server over TLS, see
``operator_client.py``; POD_NAME, POD_NAMESPACE, POD_UID and NODE_NAME from the downward API are sent
as claims). Every flag also reads an environment variable, so the
injected container needs no arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from .batch import WorkerSettings
from .http_front import DEFAULT_MAX_BODY
from .load import LoadSettings
from .operator_settings import Backoff, ClientSettings
from .runtime import Settings, Sidecar
from .upstream import UPSTREAM_CLIENTS

__all__ = ["main"]

#: The longest a stop may take (SIGTERM to exit), inside Kubernetes' default 30 s grace.
STOP_SECONDS = 25.0


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmroute-sidecar",
        description="The llmroute router sidecar: an OpenAI-compatible endpoint on localhost that routes, fails over and accounts LLM calls.",
    )
    source = parser.add_argument_group("where the routing config comes from (one of)")
    source.add_argument(
        "--config",
        default=_env("LLMROUTE_CONFIG"),
        help="LLMRoute/LLMBudget/Secret YAML: a file or a folder [LLMROUTE_CONFIG]",
    )
    source.add_argument(
        "--operator",
        default=_env("LLMROUTE_OPERATOR"),
        help="operator config server HOST:PORT [LLMROUTE_OPERATOR]",
    )
    source.add_argument(
        "--token-file",
        default=_env("LLMROUTE_TOKEN_FILE"),
        help="projected ServiceAccount token [LLMROUTE_TOKEN_FILE]",
    )
    source.add_argument(
        "--ca-file", default=_env("LLMROUTE_CA_FILE"), help="CA bundle of the operator [LLMROUTE_CA_FILE]"
    )
    source.add_argument(
        "--operator-server-name",
        default=_env("LLMROUTE_OPERATOR_SERVER_NAME"),
        help="TLS name to verify on the operator's certificate, if not the --operator host "
        "[LLMROUTE_OPERATOR_SERVER_NAME]",
    )
    source.add_argument(
        "--operator-backoff-max",
        type=float,
        default=float(_env("LLMROUTE_OPERATOR_BACKOFF_MAX", "30") or 30),
        help="longest wait between reconnects to the operator, seconds (full jitter, from 0.5 s doubling) "
        "[LLMROUTE_OPERATOR_BACKOFF_MAX]",
    )
    parser.add_argument(
        "--namespace",
        default=_env("LLMROUTE_NAMESPACE"),
        help="namespace to compile for when --config spans several [LLMROUTE_NAMESPACE]",
    )
    parser.add_argument(
        "--region",
        default=_env("LLMROUTE_REGION", ""),
        help="this sidecar's region, e.g. eu-west-1 [LLMROUTE_REGION]",
    )
    parser.add_argument(
        "--http-addr",
        default=_env("LLMROUTE_HTTP_ADDR", "127.0.0.1:14080"),
        help="OpenAI-compatible HTTP host:port [LLMROUTE_HTTP_ADDR]",
    )
    parser.add_argument(
        "--grpc-addr",
        default=_env("LLMROUTE_GRPC_ADDR", "127.0.0.1:14081"),
        help="llmroute.v1.Router gRPC host:port [LLMROUTE_GRPC_ADDR]",
    )
    parser.add_argument(
        "--admin-addr",
        default=_env("LLMROUTE_ADMIN_ADDR", ":14090"),
        help="admin (metrics, health, config_dump) host:port [LLMROUTE_ADMIN_ADDR]",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(_env("LLMROUTE_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY)) or DEFAULT_MAX_BODY),
        help="largest request body accepted [LLMROUTE_MAX_BODY_BYTES]",
    )
    parser.add_argument(
        "--upstream-client",
        default=_env("LLMROUTE_UPSTREAM_CLIENT", "httptools"),
        choices=UPSTREAM_CLIENTS,
        help="HTTP client for provider calls: httptools (a keep-alive pool on httptools' parser, the "
        "fastest in docs/performance.md), aiohttp or httpx [LLMROUTE_UPSTREAM_CLIENT]",
    )
    parser.add_argument(
        "--queue-factor",
        type=float,
        default=float(_env("LLMROUTE_QUEUE_FACTOR", "2") or 2),
        help="a backend at maxConcurrency queues up to factor x maxConcurrency requests; more get "
        "a quick 429 (0: no queue) [LLMROUTE_QUEUE_FACTOR]",
    )
    parser.add_argument(
        "--redis-url",
        default=_env("LLMROUTE_REDIS_URL", ""),
        help="a Redis shared by the workload's sidecars, for cache hits and rate-limit buckets across "
        "replicas, e.g. redis://redis.team-a:6379/0; a Redis that is down means cache off and per-sidecar "
        "buckets, never a failed request [LLMROUTE_REDIS_URL]",
    )
    parser.add_argument(
        "--batch-concurrency",
        type=int,
        default=int(_env("LLMROUTE_BATCH_CONCURRENCY", "4") or 4),
        help="batch lines this sidecar runs at once (with --redis-url); they queue behind every "
        "interactive request at a backend [LLMROUTE_BATCH_CONCURRENCY]",
    )
    parser.add_argument(
        "--batch-claim-idle-seconds",
        type=float,
        default=float(_env("LLMROUTE_BATCH_CLAIM_IDLE_SECONDS", "30") or 30),
        help="a batch line its sidecar has not renewed for this long (it stopped or died) is taken "
        "over by another [LLMROUTE_BATCH_CLAIM_IDLE_SECONDS]",
    )
    parser.add_argument(
        "--batch-max-attempts",
        type=int,
        default=int(_env("LLMROUTE_BATCH_MAX_ATTEMPTS", "3") or 3),
        help="attempts of a batch line on retryable answers (429, 5xx) before it is dead-lettered "
        "[LLMROUTE_BATCH_MAX_ATTEMPTS]",
    )
    parser.add_argument(
        "--batch-retention-days",
        type=float,
        default=float(_env("LLMROUTE_BATCH_RETENTION_DAYS", "30") or 30),
        help="an ended batch and its output and error files are deleted this many days after it "
        "ended [LLMROUTE_BATCH_RETENTION_DAYS]",
    )
    parser.add_argument(
        "--batch-provider-poll-seconds",
        type=float,
        default=float(_env("LLMROUTE_BATCH_PROVIDER_POLL_SECONDS", "30") or 30),
        help="how often a provider batch (OpenAI, Azure OpenAI, Anthropic batch APIs) is looked at for "
        "its results [LLMROUTE_BATCH_PROVIDER_POLL_SECONDS]",
    )
    parser.add_argument(
        "--batch-window-seconds",
        type=float,
        default=float(_env("LLMROUTE_BATCH_WINDOW_SECONDS", "0") or 0),
        help="for tests: the completion window every batch gets, in seconds, instead of the 24h the API "
        "takes; 0: 24h [LLMROUTE_BATCH_WINDOW_SECONDS]",
    )
    parser.add_argument(
        "--otlp-endpoint",
        default=_env("LLMROUTE_OTLP_ENDPOINT", "") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        help="send OpenTelemetry traces of requests (GenAI conventions) over OTLP/gRPC to this endpoint, "
        "e.g. http://otel-collector.observability:4317; empty: no tracing [LLMROUTE_OTLP_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_ENDPOINT]",
    )
    parser.add_argument(
        "--audit-log",
        default=_env("LLMROUTE_AUDIT_LOG", "-"),
        help='one JSON line per request: "-" for standard output, a file path, or "off" [LLMROUTE_AUDIT_LOG]',
    )
    parser.add_argument(
        "--cache-memory-mb",
        type=float,
        default=float(_env("LLMROUTE_CACHE_MEMORY_MB", "32") or 32),
        help="bound of the in-process response cache (least recently used answers go first) "
        "[LLMROUTE_CACHE_MEMORY_MB]",
    )
    parser.add_argument(
        "--metrics-tenants",
        default=_env("LLMROUTE_METRICS_TENANTS", ""),
        help="comma-separated tenants that get their own label in the attribution metrics; without a "
        "list the first 20 tenants seen do, and the rest count as 'other' [LLMROUTE_METRICS_TENANTS]",
    )
    parser.add_argument(
        "--watch-seconds",
        type=float,
        default=2.0,
        help="how often --config files are checked for changes; 0 disables",
    )
    parser.add_argument(
        "--log-level",
        default=_env("LLMROUTE_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    return parser


async def _run(settings: Settings) -> int:
    sidecar = Sidecar(settings)
    await sidecar.start()
    if sidecar.store.current is None and settings.operator is None:
        logging.getLogger("llmroute_sidecar").warning(
            "no valid config yet: serving 503s until one loads (%s)", sidecar.store.last_error
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if sidecar.source is not None:
        loop.add_signal_handler(signal.SIGHUP, sidecar.source.load)
    await stop.wait()
    log = logging.getLogger("llmroute_sidecar")
    log.info("shutting down: draining in-flight requests")
    try:
        # Within Kubernetes' default 30 s grace: a step that hangs is cut, and logged, not waited on.
        await asyncio.wait_for(sidecar.stop(), timeout=STOP_SECONDS)
    except TimeoutError:
        log.error("the stop took longer than %.0f s; exiting without the steps left", STOP_SECONDS)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.config and args.operator:
        print("llmroute-sidecar: use either --config or --operator, not both", file=sys.stderr)
        return 2
    operator: ClientSettings | None = None
    if args.operator:
        missing = [
            flag
            for flag, value in (("--token-file", args.token_file), ("--ca-file", args.ca_file))
            if not value
        ]
        if missing:
            print(f"llmroute-sidecar: --operator needs {' and '.join(missing)}", file=sys.stderr)
            return 2
        operator = ClientSettings(
            target=args.operator,
            token_file=Path(args.token_file),
            ca_file=Path(args.ca_file),
            server_name=args.operator_server_name or None,
            backoff=Backoff(max=max(0.5, args.operator_backoff_max)),
        )
    elif not args.config:
        print("llmroute-sidecar: give --config PATH (or LLMROUTE_CONFIG)", file=sys.stderr)
        return 2
    settings = Settings(
        config_path=Path(args.config) if args.config else None,
        operator=operator,
        namespace=args.namespace,
        region=args.region,
        http_addr=args.http_addr,
        grpc_addr=args.grpc_addr,
        admin_addr=args.admin_addr,
        max_body=args.max_body_bytes,
        watch_seconds=args.watch_seconds,
        upstream_client=args.upstream_client,
        load=LoadSettings(queue_factor=args.queue_factor),
        redis_url=args.redis_url,
        batch=WorkerSettings(
            concurrency=max(1, args.batch_concurrency),
            claim_idle_seconds=max(1.0, args.batch_claim_idle_seconds),
            max_attempts=max(1, args.batch_max_attempts),
            retention_seconds=max(60.0, args.batch_retention_days * 86400),
            window_seconds=args.batch_window_seconds if args.batch_window_seconds > 0 else None,
            provider_poll_seconds=max(0.05, args.batch_provider_poll_seconds),
        ),
        otlp_endpoint=args.otlp_endpoint,
        audit_log=None if args.audit_log in ("", "off") else args.audit_log,
        cache_memory_bytes=int(args.cache_memory_mb * 2**20),
        metrics_tenants=tuple(t.strip() for t in args.metrics_tenants.split(",") if t.strip()),
    )
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows); asyncio's loop works, only slower
        return asyncio.run(_run(settings))
    return uvloop.run(_run(settings))


if __name__ == "__main__":
    raise SystemExit(main())
