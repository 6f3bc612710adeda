"""Long-lived config and usage streams for e2e tests, held open by a thread each (sync gRPC).

``push_support.RawClient`` opens a stream per question; these stay open across what a test does
meanwhile (a certificate rotation, hostile calls of another Pod), to show it was not disturbed.
"""

from __future__ import annotations

import queue
import threading
import time

import grpc

from llmroute_proto.v1 import discovery_pb2 as dpb
from llmroute_proto.v1 import discovery_pb2_grpc as dpb_grpc
from llmroute_proto.v1 import usage_pb2 as upb
from llmroute_proto.v1 import usage_pb2_grpc as upb_grpc


class _Stream:
    def __init__(self, port: int, ca_pem: bytes, token: str) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        self.channel = grpc.secure_channel(f"127.0.0.1:{port}", credentials)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self._requests: queue.Queue[object] = queue.Queue()
        self.responses: queue.Queue[object] = queue.Queue()
        self.received = 0

    def _start(self, call: grpc.Call) -> None:
        self.call = call
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for response in self.call:  # type: ignore[attr-defined]
                self.responses.put(response)
        except Exception as exc:
            self.responses.put(exc)

    def _next(self, timeout: float) -> object:
        item = self.responses.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        self.received += 1
        return item

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self.channel.close()


class ConfigStream(_Stream):
    """A discovery stream; :meth:`next` waits for the next push and ACKs it."""

    def __init__(self, port: int, ca_pem: bytes, token: str, node: dpb.Node) -> None:
        super().__init__(port, ca_pem, token)
        self._requests.put(dpb.ConfigRequest(node=node))
        stub = dpb_grpc.ConfigDiscoveryStub(self.channel)
        self._start(stub.StreamConfig(iter(self._requests.get, None), metadata=self.metadata))

    def next(self, timeout: float = 20.0) -> dpb.ConfigResponse:
        item = self._next(timeout)
        assert isinstance(item, dpb.ConfigResponse)
        self._requests.put(dpb.ConfigRequest(version_info=item.version_info, response_nonce=item.nonce))
        return item

    def until_model(self, model: str, timeout: float = 20.0) -> dpb.ConfigResponse:
        """The first push whose route runs ``model`` (other changes, e.g. budget state, push too)."""
        deadline = time.monotonic() + timeout
        while True:
            pushed = self.next(timeout=max(0.1, deadline - time.monotonic()))
            routes = pushed.config.routes
            if routes and routes[0].backends and routes[0].backends[0].model == model:
                return pushed


class UsageStream(_Stream):
    """A usage stream; :meth:`send` writes a batch and waits until it is acknowledged."""

    def __init__(self, port: int, ca_pem: bytes, token: str) -> None:
        super().__init__(port, ca_pem, token)
        stub = upb_grpc.UsageReportingStub(self.channel)
        self._start(stub.ReportUsage(iter(self._requests.get, None), metadata=self.metadata))

    def send(self, batch: upb.UsageBatch, timeout: float = 20.0) -> int:
        self._requests.put(batch)
        while True:
            ack = self._next(timeout)
            assert isinstance(ack, upb.UsageAck)
            if ack.acked_sequence >= batch.sequence:
                return ack.acked_sequence
