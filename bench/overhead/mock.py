"""A fast mock of an OpenAI-compatible chat endpoint: the upstream every target of the bench calls.

Written on a bare asyncio ``Protocol`` (under uvloop) rather than an aiohttp app, so that it costs
tens of microseconds per request, like the nginx mock of design.md: the mock shares its core with
the load generator, and must not be what limits a run. It answers ``POST .../chat/completions``
with one fixed small ``chat.completion`` JSON, or, when the body asks for ``"stream":true``, with an
SSE stream whose first event carries the first token at once and whose other events follow every
``metadata.bench_interval_ms`` (``max_tokens`` events in all), then a usage chunk and ``[DONE]``.
Proxies that keep ``metadata`` (and ``user``) for themselves, as LiteLLM does, still forward the
messages, so ``bench-interval-ms:N`` anywhere in the body sets the interval too.

    python -m bench.overhead.mock --port 18000
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from typing import Any, cast

import orjson

__all__ = ["CHAT_ANSWER", "main", "serve"]

_INTERVAL_HINT = re.compile(rb"bench-interval-ms:([0-9.]+)")

CHAT_ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }
)
_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: bench-mock\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(CHAT_ANSWER)).encode()
    + b"\r\n\r\n"
)
_JSON_RESPONSE = _JSON_HEAD + CHAT_ANSWER
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: bench-mock\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _event(payload: dict[str, Any] | bytes) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%b\r\n" % (len(event), event)


def _chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    return _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "bench-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


_FIRST = _chunk({"role": "assistant", "content": "Hello"})
_TOKEN = _chunk({"content": " token"})
_LAST = _chunk({}, "stop")
_DONE = _event(b"[DONE]") + b"0\r\n\r\n"


def _usage(tokens: int) -> bytes:
    return _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "bench-model",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens},
        }
    )


class _Mock(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive, requests answered in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timers: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else None])
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            body = bytes(self._buffer[end + 4 : total])
            del self._buffer[:total]
            self._answer(head.split(b" ", 2)[1], body)

    def _answer(self, path: bytes, body: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        if not path.endswith(b"/chat/completions"):
            transport.write(_NOT_FOUND)
        elif b'"stream":true' not in body:
            transport.write(_JSON_RESPONSE)
        else:
            self._stream(transport, body)

    def _stream(self, transport: asyncio.Transport, body: bytes) -> None:
        request: dict[str, Any] = orjson.loads(body)
        tokens = max(1, int(request.get("max_tokens") or 20))
        metadata = request.get("metadata") or {}
        hint = _INTERVAL_HINT.search(body)
        interval = float(metadata.get("bench_interval_ms", hint.group(1) if hint else 20)) / 1000
        transport.write(_SSE_HEAD + _FIRST)
        loop = asyncio.get_running_loop()
        for i in range(1, tokens):
            self._timers.append(loop.call_later(interval * i, self._write, _TOKEN))
        tail = _LAST + _usage(tokens) + _DONE
        self._timers.append(loop.call_later(interval * tokens, self._write, tail, True))

    def _write(self, data: bytes, last: bool = False) -> None:
        if self._transport is not None:
            self._transport.write(data)
        if last:  # streams on one connection are sequential: every timer of this one has fired
            self._timers.clear()


async def serve(host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(_Mock, host, port, reuse_address=True, backlog=4096)


async def _main(host: str, port: int) -> None:
    server = await serve(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"bench mock on http://{host}:{port}", flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_main(args.host, args.port))


if __name__ == "__main__":
    main()
