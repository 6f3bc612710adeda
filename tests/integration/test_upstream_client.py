"""The provider-facing HTTP clients against a scripted HTTP/1.1 server on a real socket.

Every scenario runs against the three implementations of ``upstream.UpstreamClient`` (``httptools``,
the default; ``aiohttp``; ``httpx``), so they keep one contract: a 2xx answer read whole or streamed,
chunked, gzip or deflate, or ended by the connection's close; a non-2xx answer classified by the
adapter (status, ``Retry-After``); a cut, refused or malformed connection a CONNECTION error, never
a short answer. The httptools pool's own promises are checked too: keep-alive reuse, no reuse of a
connection that was cancelled, cut or not read to its end, idle expiry, TLS with SNI and a private
CA, and header values that could split a request refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import tempfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmroute_sidecar.adapters.base import UpstreamRequest
from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.adapters.registry import adapter_for
from llmroute_sidecar.attempts import _fetch
from llmroute_sidecar.upstream import UPSTREAM_CLIENTS, UpstreamClient, make_upstream
from llmroute_sidecar.upstream_httptools import HttptoolsUpstream
from tests.tls_support import Authority

pytestmark = pytest.mark.asyncio

ADAPTER = adapter_for("openai-compatible")
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]


@dataclass
class ScriptedServer:
    """Answers each request with the current script; counts connections and requests."""

    script: Script
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if not await self.script(reader, writer, head + body):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def answer(status: int, body: bytes, *headers: str, keep: bool = True) -> Script:
    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, _req: bytes) -> bool:
        extra = "".join(f"{h}\r\n" for h in headers)
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}\r\n".encode()
            + body
        )
        await writer.drain()
        return keep

    return script


def chunked(pieces: list[bytes], *, encoding: str = "") -> Script:
    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, _req: bytes) -> bool:
        extra = f"content-encoding: {encoding}\r\n" if encoding else ""
        writer.write(f"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n{extra}\r\n".encode())
        for piece in pieces:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return script


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[ScriptedServer]]]:
    servers: list[ScriptedServer] = []

    async def start(script: Script, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        server = ScriptedServer(script)
        await server.start(tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture(params=UPSTREAM_CLIENTS)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    upstream = make_upstream(request.param)
    yield upstream
    await upstream.close()


def post(
    port: int, body: bytes = b'{"q": 1}', *, scheme: str = "http", host: str = "127.0.0.1", **headers: str
) -> UpstreamRequest:
    return UpstreamRequest(
        "POST",
        f"{scheme}://{host}:{port}/v1/chat/completions",
        {"content-type": "application/json", "authorization": "Bearer sk-test", **headers},
        body,
    )


async def read(client: UpstreamClient, request: UpstreamRequest) -> bytes:
    """As the attempt loop reads an answer (a failed read becomes a CONNECTION error there)."""
    return await _fetch(client, ADAPTER, request)


# -- the contract, for every client -------------------------------------------------------------------


async def test_an_answer_is_read_whole_and_the_request_arrives_as_sent(
    client: UpstreamClient, serve: Any
) -> None:
    server = await serve(answer(200, b'{"ok": true}'))
    assert await read(client, post(server.port, b'{"model": "m"}')) == b'{"ok": true}'
    sent = server.requests[0]
    assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nauthorization: bearer sk-test\r\n" in sent.lower()
    assert sent.endswith(b'\r\n\r\n{"model": "m"}')


@pytest.mark.parametrize("encoding", ["", "gzip", "deflate"])
async def test_a_chunked_and_compressed_answer_is_decoded(
    client: UpstreamClient, serve: Any, encoding: str
) -> None:
    text = b'{"choices": [' + b'{"x": 1},' * 2000 + b"{}]}"
    packed = {"": text, "gzip": gzip.compress(text), "deflate": zlib.compress(text)}[encoding]
    pieces = [packed[i : i + 700] for i in range(0, len(packed), 700)]
    server = await serve(chunked(pieces, encoding=encoding))
    assert await read(client, post(server.port)) == text
    streamed = await client.open(post(server.port), ADAPTER)
    try:
        assert b"".join([piece async for piece in streamed.iter_chunks()]) == text
    finally:
        streamed.close()


async def test_an_answer_ended_by_the_connections_close_is_whole(client: UpstreamClient, serve: Any) -> None:
    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, _req: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n")
        writer.write(b'{"until": "the close"}')
        await writer.drain()
        return False

    server = await serve(script)
    assert await read(client, post(server.port)) == b'{"until": "the close"}'


async def test_a_refusal_is_classified_by_the_adapter_with_its_retry_after(
    client: UpstreamClient, serve: Any
) -> None:
    server = await serve(
        answer(429, b'{"error": {"message": "slow down", "type": "rate"}}', "Retry-After: 7")
    )
    with pytest.raises(ProviderError) as refused:
        await read(client, post(server.port))
    assert refused.value.kind == ErrorKind.RATE_LIMITED
    assert refused.value.retry_after == 7 and "slow down" in refused.value.message
    server.script = answer(503, b"upstream overloaded")
    with pytest.raises(ProviderError) as failed:
        await read(client, post(server.port))
    assert failed.value.status == 503 and "overloaded" in failed.value.message


async def test_a_body_cut_short_is_a_connection_error_not_a_short_answer(
    client: UpstreamClient, serve: Any
) -> None:
    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, _req: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b'{"partial": ')
        await writer.drain()
        return False

    server = await serve(script)
    with pytest.raises(ProviderError) as cut:
        await read(client, post(server.port))
    assert cut.value.kind == ErrorKind.CONNECTION


async def test_no_answer_or_nothing_listening_is_a_connection_error(
    client: UpstreamClient, serve: Any
) -> None:
    async def hang_up(_r: asyncio.StreamReader, _w: asyncio.StreamWriter, _req: bytes) -> bool:
        return False

    server = await serve(hang_up)
    with pytest.raises(ProviderError) as closed:
        await read(client, post(server.port))
    assert closed.value.kind == ErrorKind.CONNECTION
    port = server.port
    await server.stop()
    with pytest.raises(ProviderError) as refused:
        await read(client, post(port))
    assert refused.value.kind == ErrorKind.CONNECTION


async def test_a_malformed_answer_is_a_connection_error(client: UpstreamClient, serve: Any) -> None:
    async def garbage(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, _req: bytes) -> bool:
        writer.write(b"HTTP/1.1 abc nonsense\r\n\x00\x01\r\n\r\n")
        await writer.drain()
        return False

    server = await serve(garbage)
    with pytest.raises(ProviderError) as bad:
        await read(client, post(server.port))
    assert bad.value.kind == ErrorKind.CONNECTION


# -- the httptools pool's own promises -----------------------------------------------------------------


async def test_keep_alive_reuses_one_connection_and_a_cancelled_call_never_is(serve: Any) -> None:
    pool = HttptoolsUpstream()
    try:
        server = await serve(answer(200, b"{}"))
        for _ in range(5):
            assert await read(pool, post(server.port)) == b"{}"
        assert server.connections == 1 and len(server.requests) == 5

        async def slow(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, _req: bytes) -> bool:
            await asyncio.sleep(0.5)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
            return True

        server.script = slow
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await read(pool, post(server.port))
        server.script = answer(200, b'{"fresh": 1}')
        assert await read(pool, post(server.port)) == b'{"fresh": 1}'  # not the slow call's late answer
        assert server.connections == 2
    finally:
        await pool.close()


async def test_a_stream_left_unread_closes_its_connection(serve: Any) -> None:
    pool = HttptoolsUpstream()
    try:
        server = await serve(chunked([b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]))
        response = await pool.open(post(server.port), ADAPTER)
        pieces = response.iter_chunks()
        assert await anext(pieces) == b"data: 1\n\n"
        response.close()  # the app went away mid-stream
        with pytest.raises(StopAsyncIteration):
            await anext(pieces)  # a released connection is never read again
        server.script = answer(200, b"{}")
        assert await read(pool, post(server.port)) == b"{}"
        assert server.connections == 2
    finally:
        await pool.close()


async def test_an_idle_connection_past_its_keepalive_or_closed_by_the_server_is_not_reused(
    serve: Any,
) -> None:
    pool = HttptoolsUpstream(keepalive_seconds=0.2)
    try:
        server = await serve(answer(200, b"{}"))
        await read(pool, post(server.port))
        await asyncio.sleep(0.3)
        await read(pool, post(server.port))
        assert server.connections == 2
        server.script = answer(200, b"{}", keep=False)  # the server closes after answering
        await read(pool, post(server.port))
        await asyncio.sleep(0.05)
        server.script = answer(200, b"{}")
        await read(pool, post(server.port))
        assert server.connections == 3  # the third call used the second connection, which then closed
    finally:
        await pool.close()


async def test_tls_with_sni_and_a_private_ca_and_an_untrusted_server_refused(serve: Any) -> None:
    authority = Authority.new()
    issued = authority.issue()
    context = _serving_context(issued.cert_pem, issued.key_pem)
    server = await serve(answer(200, b'{"secure": true}'), context)
    trusting = ssl.create_default_context(cadata=authority.ca_pem.decode())
    pool = HttptoolsUpstream(ssl_context=trusting)
    try:
        request = post(server.port, scheme="https", host="localhost")
        assert await read(pool, request) == b'{"secure": true}'
    finally:
        await pool.close()
    default = HttptoolsUpstream()  # the system's trust store does not know the private CA
    try:
        with pytest.raises(ProviderError) as refused:
            await read(default, post(server.port, scheme="https", host="localhost"))
        assert refused.value.kind == ErrorKind.CONNECTION and "TLS" in refused.value.message
    finally:
        await default.close()


def _serving_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\rb", "a\x00b"])
async def test_a_header_that_could_split_the_request_is_refused_before_sending(
    serve: Any, value: str
) -> None:
    pool = HttptoolsUpstream()
    try:
        server = await serve(answer(200, b"{}"))
        with pytest.raises(ProviderError) as refused:
            await read(pool, post(server.port, **{"x-trace": value}))
        assert refused.value.kind == ErrorKind.BAD_REQUEST
        assert server.requests == []
    finally:
        await pool.close()
