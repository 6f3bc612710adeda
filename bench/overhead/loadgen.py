"""The load generator: closed-loop HTTP/1.1 clients with a fixed connection pool, and SSE streams.

Non-streaming load uses a bare asyncio ``Protocol`` client (one pre-built request, keep-alive, the
answer framed by Content-Length or chunked encoding) because it shares a core with the mock and must
cost far less per request than anything it measures (10-15 µs of CPU per request here, against
about 90 µs for an aiohttp ``ClientSession``). ``concurrency`` connections each send one request,
wait for the whole answer, and send the next, for a fixed time after a warm-up that is not counted;
a request counts when it was sent inside the window (its answer may come just after). Streams use
an aiohttp client (their rate is low) and time the first ``data:`` bytes (time to first token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import aiohttp
import orjson

__all__ = ["LoadResult", "StreamResult", "chat_body", "run_load", "run_streams"]


def chat_body(*, stream: bool = False, tokens: int = 16, interval_ms: float = 20.0) -> bytes:
    body: dict[str, object] = {
        "model": "chat",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": tokens,
    }
    if stream:
        body["stream"] = True
        body["metadata"] = {"bench_interval_ms": str(interval_ms)}
    return orjson.dumps(body)


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nAuthorization: Bearer bench\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class _Client(asyncio.Protocol):
    """One keep-alive connection; ``send()`` returns (status, body) of the next answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self.lost)

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self.lost is not None or self.transport is None:
            raise ConnectionResetError("connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answer = self._parse()
        if answer is not None and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self._buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buf[:end]).lower()
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else None])
            if len(buf) < end + 4 + length:
                return None
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            return status, body
        if b"transfer-encoding: chunked" not in head:
            raise ValueError("answer has neither Content-Length nor chunked encoding")
        pos, parts = end + 4, []
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            if len(buf) < line_end + 2 + size + 2:
                return None
            parts.append(bytes(buf[line_end + 2 : line_end + 2 + size]))
            pos = line_end + 2 + size + 2
            if size == 0:
                del buf[:pos]
                return status, b"".join(parts)


@dataclass
class LoadResult:
    """One closed-loop segment: latencies (ns) of the requests that completed in the window."""

    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    sample: bytes = b""

    @property
    def rps(self) -> float:
        return len(self.latencies_ns) / self.seconds if self.seconds else 0.0


async def run_load(
    host: str,
    port: int,
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    path: str = "/v1/chat/completions",
    body: bytes | None = None,
    on_window: Callable[[bool], None] | None = None,
) -> LoadResult:
    """``concurrency`` closed-loop clients for ``warmup`` + ``seconds``; only the window is counted.

    ``on_window(True)`` is called when the counted window opens and ``on_window(False)`` when it
    closes, so the caller can read CPU and memory counters over exactly that window.
    """
    loop = asyncio.get_running_loop()
    request = _request(host, port, path, body if body is not None else chat_body())
    clients = []
    for _ in range(concurrency):
        _, client = await loop.create_connection(_Client, host, port)
        clients.append(client)
    result = LoadResult()
    now = time.perf_counter_ns
    start = now()
    window_open = start + int(warmup * 1e9)
    window_close = window_open + int(seconds * 1e9)
    latencies = result.latencies_ns

    async def worker(client: _Client) -> None:
        while True:
            sent = now()
            if sent >= window_close:
                return
            try:
                status, answer = await client.send(request)
            except (ConnectionError, OSError, ValueError):
                result.errors += 1
                return
            done = now()
            if status != 200:
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.errors += 1
                if not result.sample:
                    result.sample = answer[:300]
            elif sent >= window_open:  # counted by send time, so slow answers are not cut off
                latencies.append(done - sent)
                if not result.sample:
                    result.sample = answer[:300]

    async def window() -> None:
        await asyncio.sleep(warmup)
        if on_window is not None:
            on_window(True)
        await asyncio.sleep(seconds)
        if on_window is not None:
            on_window(False)

    try:
        await asyncio.wait_for(
            asyncio.gather(window(), *(worker(c) for c in clients)), timeout=warmup + seconds + 30
        )
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
    result.seconds = seconds
    return result


@dataclass
class StreamResult:
    ttft_ns: list[int] = field(default_factory=list)
    total_ns: list[int] = field(default_factory=list)
    errors: int = 0
    incomplete: int = 0
    peak_open: int = 0


async def run_streams(
    url: str,
    *,
    concurrency: int,
    seconds: float,
    tokens: int,
    interval_ms: float,
    ramp: float = 0.0,
    once: bool = False,
    limit: float | None = None,
) -> StreamResult:
    """``concurrency`` streams at a time for ``seconds`` (or each exactly once with ``once``).

    ``ramp`` spreads the start of the streams over that many seconds. A stream counts when it ends
    with ``data: [DONE]``; its TTFT is the time to the first ``data:`` bytes. After ``limit``
    seconds, streams still open are abandoned and counted as incomplete.
    """
    body = chat_body(stream=True, tokens=tokens, interval_ms=interval_ms)
    headers = {"content-type": "application/json", "authorization": "Bearer bench"}
    result = StreamResult()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=seconds + tokens * interval_ms / 1000 + 60)
    now = time.perf_counter_ns
    end = now() + int(seconds * 1e9)
    open_streams = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal open_streams
        sent = now()
        first = 0
        tail = b""
        open_streams += 1
        result.peak_open = max(result.peak_open, open_streams)
        try:
            async with session.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    await response.read()
                    result.errors += 1
                    return
                async for data in response.content.iter_any():
                    if not first and b"data:" in data:
                        first = now()
                    tail = (tail + data)[-64:]
        except (aiohttp.ClientError, OSError, TimeoutError):
            result.errors += 1
            return
        except asyncio.CancelledError:  # still open when the limit ran out
            result.incomplete += 1
            raise
        finally:
            open_streams -= 1
        if b"[DONE]" not in tail or not first:
            result.incomplete += 1
            return
        result.ttft_ns.append(first - sent)
        result.total_ns.append(now() - sent)

    async def lane(session: aiohttp.ClientSession, index: int) -> None:
        if ramp:
            await asyncio.sleep(ramp * index / concurrency)
        while True:
            await one(session)
            if once or now() >= end:
                return

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*(lane(session, i) for i in range(concurrency)))
        except TimeoutError:
            pass  # the abandoned streams were counted as incomplete
    return result
