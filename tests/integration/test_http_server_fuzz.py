"""Generated raw bytes against the sidecar's app-facing front over a real socket: never a 500,
never a hang, and the server stays up.

The sidecar (its real front: routes, error middleware, OpenAI error renderer) and a fake OpenAI
provider run on an event loop in a thread of their own; Hypothesis sends each example on a fresh
blocking socket, half-closes it, and reads to the end under a deadline. Three kinds of input: any
bytes; valid requests (chat, chunked, pipelined, Expect) with bytes inserted, deleted or replaced;
and heads put together from any method, target, version and header fields.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Settings, Sidecar

from .conftest import route_yaml

pytestmark = pytest.mark.timeout(300)

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
READ_DEADLINE = 10.0  # a hang fails the example: nothing here takes a fraction of this


@dataclass
class Running:
    port: int
    loop: asyncio.AbstractEventLoop


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A real sidecar and fake provider on an event loop in a thread (Hypothesis tests are sync)."""
    loop = asyncio.new_event_loop()
    ready: list[Running] = []
    parts: list[object] = []
    started = threading.Event()

    async def start() -> None:
        provider = FakeProvider("openai")
        await provider.start()
        path: Path = tmp_path_factory.mktemp("fuzz-front") / "route.yaml"
        text = route_yaml([{"name": "a", "provider": "openai", "model": "m", "endpoint": provider.base_url}])
        await asyncio.to_thread(path.write_text, text)
        sidecar = Sidecar(
            Settings(
                config_path=path,
                http_addr="127.0.0.1:0",
                admin_addr="127.0.0.1:0",
                grpc=False,
                watch_seconds=0,
                max_body=64 * 1024,
            )
        )
        await sidecar.start()
        parts.extend([provider, sidecar])
        ready.append(Running(sidecar.http_port, loop))

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="fuzz-front", daemon=True)
    thread.start()
    assert started.wait(30), "the sidecar did not start"
    yield ready[0]

    async def stop() -> None:
        provider, sidecar = parts
        await sidecar.stop(grace=1.0)  # type: ignore[attr-defined]
        await provider.stop()  # type: ignore[attr-defined]

    asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


class _Statuses:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())


def send(port: int, data: bytes) -> tuple[list[int], bytes]:
    """Send ``data``, half-close, read to the end: (the statuses answered, the raw answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_DEADLINE) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before all of it was sent: read what it said
        raw = b""
        try:
            while chunk := sock.recv(65536):
                raw += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"no end of the answer within {READ_DEADLINE} s for {data[:200]!r}")
    statuses = _Statuses()
    try:
        statuses.parser.feed_data(raw)
    except httptools.HttpParserError:
        pytest.fail(f"the server answered something that is not HTTP: {raw[:300]!r}")
    return statuses.statuses, raw


def check(front: Running, data: bytes) -> None:
    statuses, raw = send(front.port, data)
    assert 500 not in statuses, f"a 500 for {data[:300]!r}: {raw[:500]!r}"
    assert b"Traceback" not in raw


CHAT = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}'
VALID = [
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(CHAT), CHAT),
    b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (len(CHAT), CHAT),
    b"POST /v1/chat/completions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n%s"
    % (len(CHAT), CHAT),
    b"GET /v1/models/chat HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /v1/models HTTP/1.1\r\n\r\n",
    b"POST /v1/files HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 60\r\n\r\n"
    b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b--',
    b"DELETE /v1/conversations/c1 HTTP/1.1\r\nx-llmroute-tenant: t\r\n\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        if kind == "insert":
            data[at:at] = draw(
                st.binary(min_size=1, max_size=8) | st.sampled_from([b"\r\n", b"\n", b":", b" ", b"\0"])
            )
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 40))] * draw(st.integers(1, 3))
    return bytes(data)


TOKEN = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@st.composite
def assembled(draw: st.DrawFn) -> bytes:
    method = draw(
        st.sampled_from([b"GET", b"POST", b"DELETE", b"PUT", b"HEAD", b"OPTIONS", b"CONNECT"])
        | TOKEN.map(str.encode)
    )
    target = draw(
        st.sampled_from([b"/v1/chat/completions", b"/v1/models", b"/v1/files", b"*", b"http://x/v1/models"])
        | st.binary(max_size=40)
    )
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""]))
    names = st.sampled_from(
        [
            b"content-length",
            b"transfer-encoding",
            b"expect",
            b"connection",
            b"content-type",
            b"upgrade",
            b"x-request-id",
            b"x-llmroute-tenant",
        ]
    ) | TOKEN.map(str.encode)
    values = st.sampled_from(
        [
            b"0",
            b"5",
            b"chunked",
            b"100-continue",
            b"close",
            b"keep-alive",
            b"multipart/form-data; boundary=x",
            b"websocket",
        ]
    ) | st.binary(max_size=20)
    headers = draw(st.lists(st.tuples(names, values), max_size=6))
    body = draw(st.binary(max_size=64))
    head = (
        method
        + b" "
        + target
        + b" "
        + version
        + b"\r\n"
        + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    )
    return head + b"\r\n" + body


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes(front: Running, data: bytes) -> None:
    check(front, data)


@SETTINGS
@given(mutated())
def test_valid_requests_with_bytes_inserted_deleted_or_replaced(front: Running, data: bytes) -> None:
    check(front, data)


@SETTINGS
@given(assembled())
def test_heads_put_together_from_any_parts(front: Running, data: bytes) -> None:
    check(front, data)


def test_the_server_is_still_up_and_logged_no_unhandled_error(
    front: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    statuses, _ = send(front.port, VALID[1])
    assert statuses == [200]
    statuses, _ = send(front.port, b"GET /v1/models HTTP/1.1\r\n\r\n" * 3)
    assert statuses == [200, 200, 200]
    assert not [
        r for r in caplog.records if "unhandled" in r.getMessage() or "callback failed" in r.getMessage()
    ]
