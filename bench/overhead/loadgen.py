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
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import aiohttp
import orjson

__all__ = ["LoadResult", "StreamResult", "chat_body", "run_load", "run_streams"]


def chat_body(
    *, stream: bool = False, tokens: int = 16, interval_ms: float = 20.0, content_hint: bool = False
) -> bytes:
    """The request every target gets. ``content_hint`` also writes the stream interval into the
    message (``bench-interval-ms:N``), for proxies that forward neither ``metadata`` nor ``user``
    (LiteLLM); the mock reads either."""
    content = "Say hello."
    if stream and content_hint:
        content += f" [bench-interval-ms:{interval_ms:g}]"
    body: dict[str, object] = {
        "model": "chat",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": tokens,
    }
    if stream:
        body["stream"] = True
        body["metadata"] = {"bench_interval_ms": str(interval_ms)}
    return orjson.dumps(body)


def _request(host: str, port: int, path: str, body: bytes, token: str = "bench") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
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
    # Answers that arrived inside the window, whenever they were sent: the served rate even when one
    # answer takes longer than the window (a saturated server at high concurrency).
    completed_in_window: int = 0
    warmup_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies_ns) / self.seconds if self.seconds else 0.0

    @property
    def served_rps(self) -> float:
        return self.completed_in_window / self.seconds if self.seconds else 0.0


async def run_load(
    host: str,
    port: int,
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    path: str = "/v1/chat/completions",
    body: bytes | None = None,
    token: str = "bench",
    drain: float = 30.0,
    warm_all: bool = False,
    on_window: Callable[[bool], None] | None = None,
) -> LoadResult:
    """``concurrency`` closed-loop clients for ``warmup`` + ``seconds``; only the window is counted.

    ``on_window(True)`` is called when the counted window opens and ``on_window(False)`` when it
    closes, so the caller can read CPU and memory counters over exactly that window. With
    ``warm_all`` the warm-up also lasts until every connection has had one answer (at most
    ``drain / 2`` s), and the window lasts at least as long as that took, so that a server slower
    than the window is measured over a whole cycle of its connections, in its steady state.
    """
    loop = asyncio.get_running_loop()
    request = _request(host, port, path, body if body is not None else chat_body(), token)
    clients = []
    for _ in range(concurrency):
        _, client = await loop.create_connection(_Client, host, port)
        clients.append(client)
    result = LoadResult()
    now = time.perf_counter_ns
    start = now()
    # [open, close] of the counted window, in perf_counter ns; ``warm_all`` may move it later.
    bounds = [start + int(warmup * 1e9), start + int((warmup + seconds) * 1e9)]
    latencies = result.latencies_ns
    answered: set[int] = set()  # lanes that have had one answer (for ``warm_all``)
    all_answered = asyncio.Event()

    async def worker(lane: int, client: _Client) -> None:
        while True:
            sent = now()
            if sent >= bounds[1]:
                return
            try:
                status, answer = await client.send(request)
            except (ConnectionError, OSError, ValueError):
                result.errors += 1
                all_answered.set()  # a dead lane will never answer: do not wait for it
                return
            done = now()
            if lane not in answered:
                answered.add(lane)
                if len(answered) == len(clients):
                    all_answered.set()
            opened, closed = bounds
            if opened <= done < closed:
                result.completed_in_window += 1
            if status != 200:
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.errors += 1
                if not result.sample:
                    result.sample = answer[:300]
            elif sent >= opened:  # counted by send time, so slow answers are not cut off
                latencies.append(done - sent)
                if not result.sample:
                    result.sample = answer[:300]

    async def window() -> None:
        await asyncio.sleep(warmup)
        span = seconds
        if warm_all:  # a saturated server takes c / rate seconds to answer every lane once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_answered.wait(), drain / 2)
            # ... and may answer a whole cycle at once (asyncio interleaves all requests, so they
            # finish together): the window lasts at least one such cycle.
            span = max(seconds, (now() - start) / 1e9)
            bounds[0] = now()
            bounds[1] = bounds[0] + int(span * 1e9)
        result.warmup_seconds = (bounds[0] - start) / 1e9
        result.seconds = span
        if on_window is not None:
            on_window(True)
        await asyncio.sleep(span)
        if on_window is not None:
            on_window(False)

    try:
        await asyncio.wait_for(
            asyncio.gather(window(), *(worker(i, c) for i, c in enumerate(clients))),
            timeout=warmup + seconds + drain * (2.5 if warm_all else 1),
        )
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
    return result


@dataclass
class StreamResult:
    ttft_ns: list[int] = field(default_factory=list)
    total_ns: list[int] = field(default_factory=list)
    # Gaps between successive reads of a stream after its first data (with ``gaps=True``).
    gaps_ns: list[int] = field(default_factory=list)
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
    token: str = "bench",
    content_hint: bool = False,
    gaps: bool = False,
) -> StreamResult:
    """``concurrency`` streams at a time for ``seconds`` (or each exactly once with ``once``).

    ``ramp`` spreads the start of the streams over that many seconds. A stream counts when it ends
    with ``data: [DONE]``; its TTFT is the time to the first ``data:`` bytes. After ``limit``
    seconds, streams still open are abandoned and counted as incomplete. ``gaps`` records the time
    between successive network reads of each completed stream (inter-chunk latency).
    """
    body = chat_body(stream=True, tokens=tokens, interval_ms=interval_ms, content_hint=content_hint)
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    result = StreamResult()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=seconds + tokens * interval_ms / 1000 + 60)
    now = time.perf_counter_ns
    end = now() + int(seconds * 1e9)
    open_streams = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal open_streams
        sent = now()
        first = last = 0
        mine: list[int] = []
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
                        first = last = now()
                    elif first and gaps:
                        at = now()
                        mine.append(at - last)
                        last = at
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
        result.gaps_ns.extend(mine)

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
