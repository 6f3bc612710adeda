"""Lightweight subscribed sidecars: one worker process holding many config-discovery streams.

``python -m bench.propagation.clients --target 127.0.0.1:PORT --ca CA --namespace NS`` reads lines
``<pod-name> <token>`` on stdin (more may come at any time) and opens, for each, its own TLS channel
and ``StreamConfig`` stream with that pod's token, exactly as a sidecar would (so every client costs
the operator a TokenReview, a Pod read and a stream). Each pushed config is ACKed at once, without
building a routing snapshot (that cost is the sidecar's, not propagation's), and reported on stdout
as ``ack <pod> <version> <monotonic seconds>``; ``up <pod>`` when the server accepted the stream,
``err <pod> <message>`` on failure. ``time.monotonic`` is CLOCK_MONOTONIC, comparable across the
processes of one machine, so the coordinator subtracts its own apply instant from these.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from llmroute_proto.v1 import discovery_pb2 as dpb
from llmroute_proto.v1 import discovery_pb2_grpc as dpb_grpc


def emit(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


async def subscribe(target: str, ca: bytes, namespace: str, pod: str, token: str) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    async with grpc.aio.secure_channel(target, credentials) as channel:
        call: Any = dpb_grpc.ConfigDiscoveryStub(channel).StreamConfig(
            metadata=(("authorization", f"Bearer {token}"),)
        )
        await call.write(
            dpb.ConfigRequest(node=dpb.Node(id=f"{pod}-bench", pod_name=pod, namespace=namespace))
        )
        if "x-llmroute-session" not in dict(await call.initial_metadata() or ()):
            await call.read()  # raises the refusal
        emit("up", pod)
        while (response := await call.read()) is not grpc.aio.EOF:
            await call.write(
                dpb.ConfigRequest(version_info=response.version_info, response_nonce=response.nonce)
            )
            emit("ack", pod, response.version_info, f"{time.monotonic():.6f}")


async def run(args: argparse.Namespace) -> None:
    ca = Path(args.ca).read_bytes()  # noqa: ASYNC240 - once, at start
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    async def guarded(pod: str, token: str) -> None:
        try:
            await subscribe(args.target, ca, args.namespace, pod, token)
        except Exception as exc:
            emit("err", pod, str(exc).replace("\n", " ")[:300])

    while line := await reader.readline():
        pod, _, token = line.decode().strip().partition(" ")
        if pod and token:
            task = asyncio.create_task(guarded(pod, token))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(0)  # let connections start while more lines arrive
    for task in tasks:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--namespace", required=True)
    args = parser.parse_args()
    asyncio.run(run(args))  # the default loop: grpc.aio integrates with it


if __name__ == "__main__":
    main()
