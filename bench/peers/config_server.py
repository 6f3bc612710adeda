"""A minimal operator config server for the bench: feeds one sidecar in operator mode over TLS.

The bench measures the sidecar's idle RSS in both of its modes. Operator mode needs a config server;
this one is the smallest that speaks the real protocol: ``ConfigDiscovery.StreamConfig`` sends the
initial metadata a sidecar waits for (``x-llmroute-session``), then one ``ConfigResponse`` with the
``RouterConfig`` compiled from the same route YAML the standalone sidecar loads (the shared pure
compiler), and reads the ACK; ``UsageReporting.ReportUsage`` acknowledges every batch. No
TokenReview, no Kubernetes: identity is not what is measured. The TLS certificate comes from the
operator's ``make_dev_certificates`` (what ``llmroute-operator --dev`` uses); its CA is written to
``--ca-out`` for the sidecar's ``--ca-file``.

    python -m bench.peers.config_server --port 14100 --route route.yaml --ca-out ca.pem
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from llmroute_proto.v1 import discovery_pb2 as dpb
from llmroute_proto.v1 import discovery_pb2_grpc as dpb_grpc
from llmroute_proto.v1 import usage_pb2 as upb
from llmroute_proto.v1 import usage_pb2_grpc as upb_grpc

__all__ = ["main"]


class _Discovery(dpb_grpc.ConfigDiscoveryServicer):  # type: ignore[misc]
    def __init__(self, config: Any) -> None:
        self.config = config

    async def StreamConfig(
        self, requests: AsyncIterator[dpb.ConfigRequest], context: Any
    ) -> AsyncIterator[dpb.ConfigResponse]:
        await context.send_initial_metadata((("x-llmroute-session", "bench"),))
        first = True
        async for request in requests:
            if first:
                first = False
                print(f"sidecar {request.node.id or '?'} connected", flush=True)
                yield dpb.ConfigResponse(version_info="bench-1", nonce="1", config=self.config)
            elif request.response_nonce:
                state = "NACK " + request.error_detail.message if request.error_detail.message else "ACK"
                print(f"{state} {request.version_info}", flush=True)


class _Usage(upb_grpc.UsageReportingServicer):  # type: ignore[misc]
    async def ReportUsage(
        self, batches: AsyncIterator[upb.UsageBatch], context: Any
    ) -> AsyncIterator[upb.UsageAck]:
        async for batch in batches:
            yield upb.UsageAck(acked_sequence=batch.sequence)


async def _serve(port: int, config: Any, key_pem: bytes, cert_pem: bytes) -> None:
    server = grpc.aio.server()
    dpb_grpc.add_ConfigDiscoveryServicer_to_server(_Discovery(config), server)
    upb_grpc.add_UsageReportingServicer_to_server(_Usage(), server)
    server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    await server.start()
    print(f"bench config server on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--route", type=Path, required=True, help="LLMRoute YAML to compile and push")
    parser.add_argument("--ca-out", type=Path, required=True, help="where to write the CA (PEM)")
    args = parser.parse_args(argv)
    from llmroute_operator.certs import make_dev_certificates
    from llmroute_sidecar.config.standalone import compile_path

    certs = make_dev_certificates()
    args.ca_out.write_bytes(certs.ca_pem)
    asyncio.run(_serve(args.port, compile_path(args.route), certs.key_pem, certs.cert_pem))


if __name__ == "__main__":
    main()
