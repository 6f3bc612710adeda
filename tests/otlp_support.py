"""A real OTLP/gRPC trace receiver for tests: the OpenTelemetry protocol's own service definition
(``opentelemetry-proto``), served by grpc.aio on a loopback port, keeping every span it is sent.

The sidecar's exporter talks to it over a real socket with the real wire format, as it would to an
OpenTelemetry Collector; the test then reads the spans as the Collector would have received them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["OtlpReceiver", "attributes"]


def attributes(span: trace_pb2.Span | Any) -> dict[str, Any]:
    """A span's (or event's) attributes as plain values."""
    out: dict[str, Any] = {}
    for item in span.attributes:
        value = item.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[item.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[item.key] = getattr(value, kind) if kind else None
    return out


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.resources: list[dict[str, Any]] = []
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            self.resources.append(attributes(resource_spans.resource))
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    async def start(self) -> None:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_for(self, count: int, seconds: float = 10.0) -> list[trace_pb2.Span]:
        for _ in range(int(seconds / 0.05)):
            if len(self.spans) >= count:
                break
            await asyncio.sleep(0.05)
        return list(self.spans)
