"""Runs the real ``llmroute-sidecar`` CLI for the bench, with the gRPC front off when it is absent.

The bench measures the sidecar as a pod runs it: ``llmroute_sidecar.__main__.main`` with the same
flags. Only if this checkout has no gRPC front yet (``grpc_front.py`` is a separate issue) does it
start the same :class:`Sidecar` with ``grpc=False``, and it says so on stderr; the results record
which one ran.

    python -m bench.overhead.sidecar_proc --config route.yaml --http-addr 127.0.0.1:18002 ...
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__all__ = ["grpc_front_present", "main"]


def grpc_front_present() -> bool:
    return importlib.util.find_spec("llmroute_sidecar.grpc_front") is not None


def main(argv: list[str]) -> int:
    from llmroute_sidecar import __main__ as cli

    if grpc_front_present():
        return cli.main(argv)
    import logging

    import uvloop

    from llmroute_sidecar.runtime import Settings

    args = cli.build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    print("bench: llmroute_sidecar.grpc_front is absent: running without the gRPC front", file=sys.stderr)
    settings = Settings(
        config_path=Path(args.config),
        region=args.region,
        http_addr=args.http_addr,
        admin_addr=args.admin_addr,
        watch_seconds=args.watch_seconds,
        upstream_client=args.upstream_client,
        grpc=False,
    )
    return uvloop.run(cli._run(settings))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
