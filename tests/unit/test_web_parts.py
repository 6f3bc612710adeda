"""The pure parts of the sidecar's HTTP server (``llmroute_sidecar/web``): routing, header maps and
the multipart/form-data parser. The connection itself is tested over real sockets in
``tests/integration/test_http_server.py``."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_sidecar import web
from llmroute_sidecar.web.multipart import MultipartError, parse_form_data, parse_header_value
from llmroute_sidecar.web.request import decode_path


async def _handler(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def _other(request: web.Request) -> web.StreamResponse:
    return web.Response(text="other")


def test_routes_match_exact_paths_and_templates_with_their_parameters() -> None:
    router = web.Router()
    router.add_get("/v1/models", _handler)
    router.add_get("/v1/models/{name:.+}", _other)
    router.add_get("/v1/files/{file_id}", _handler)
    router.add_get("/v1/files/{file_id}/content", _other)
    assert router.resolve("GET", "/v1/models") == (_handler, {})
    assert router.resolve("GET", "/v1/models/acme/llama-3") == (_other, {"name": "acme/llama-3"})
    assert router.resolve("HEAD", "/v1/files/file-1") == (_handler, {"file_id": "file-1"})
    assert router.resolve("GET", "/v1/files/file-1/content") == (_other, {"file_id": "file-1"})


def test_an_unknown_path_is_404_and_a_known_one_with_another_method_405_with_allow() -> None:
    router = web.Router()
    router.add_post("/v1/chat/completions", _handler)
    router.add_get("/v1/files", _handler)
    router.add_post("/v1/files", _other)
    with pytest.raises(web.HTTPNotFound) as missing:
        router.resolve("POST", "/v1/nope")
    assert missing.value.code == "unknown_url" and "POST /v1/nope" in missing.value.message
    with pytest.raises(web.HTTPMethodNotAllowed) as wrong:
        router.resolve("GET", "/v1/chat/completions")
    assert wrong.value.headers == {"allow": "POST"}
    assert wrong.value.message == "GET is not allowed on /v1/chat/completions; use POST"
    with pytest.raises(web.HTTPMethodNotAllowed) as other:
        router.resolve("DELETE", "/v1/files")
    assert other.value.headers["allow"] == "GET, HEAD, POST"


def test_a_route_added_twice_or_without_a_slash_is_refused() -> None:
    router = web.Router()
    router.add_post("/a", _handler)
    with pytest.raises(ValueError, match="twice"):
        router.add_post("/a", _other)
    with pytest.raises(ValueError, match="starts with"):
        router.add_post("a", _other)


def test_request_headers_are_case_insensitive_and_keep_repeats() -> None:
    headers = web.Headers([(b"X-Request-Id", b"abc"), (b"Accept", b"a"), (b"accept", b"b")])
    assert headers["x-request-id"] == "abc" and headers.get("X-REQUEST-ID") == "abc"
    assert headers.get("missing") is None and headers.get("missing", "d") == "d"
    assert headers["Accept"] == "a" and headers.getall("ACCEPT") == ["a", "b"]
    assert "x-Request-ID" in headers and len(headers) == 2
    assert dict(headers) == {"x-request-id": "abc", "accept": "a"}


def test_request_header_bytes_that_are_not_utf8_survive_as_surrogates() -> None:
    headers = web.Headers([(b"x-llmroute-tenant", b"\xff\xfe")])
    value = headers["x-llmroute-tenant"]
    assert value.encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_response_headers_refuse_line_breaks_and_are_case_insensitive() -> None:
    headers = web.ResponseHeaders({"Content-Type": "text/plain"})
    assert headers["content-type"] == "text/plain"
    assert headers.setdefault("X-Request-Id", "a") == "a" and headers.setdefault("x-request-id", "b") == "a"
    with pytest.raises(ValueError, match="line break"):
        headers["x-evil"] = "a\r\nset-cookie: b"
    assert headers.block() == "content-type: text/plain\r\nx-request-id: a\r\n"
    headers["Content-Length"] = "3"
    headers["connection"] = "upgrade"
    assert headers.block() == "content-type: text/plain\r\nx-request-id: a\r\n", "the server frames answers"


def test_paths_are_percent_decoded_as_utf8_and_never_fail() -> None:
    assert decode_path(b"/v1/models") == "/v1/models"
    assert decode_path(b"/v1/models/caf%C3%A9") == "/v1/models/café"
    assert decode_path(b"/v1/%ff") == "/v1/\ufffd"


# -- multipart/form-data --------------------------------------------------------------------------

CT = "multipart/form-data; boundary=XyZ"


def _form(*parts: bytes, boundary: bytes = b"XyZ") -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + boundary + b"--\r\n"


def test_a_form_as_the_openai_sdk_sends_it_parses() -> None:
    body = _form(
        b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch',
        b'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n"
        b'{"a": 1}\r\n{"b": 2}\r\n',
    )
    purpose, upload = parse_form_data(body, CT)
    assert (purpose.name, purpose.filename, purpose.content) == ("purpose", None, b"batch")
    assert (upload.name, upload.filename) == ("file", "in.jsonl")
    assert upload.content_type == "application/jsonl"
    assert upload.content == b'{"a": 1}\r\n{"b": 2}\r\n'  # line breaks inside the content are kept


def test_quoted_escaped_and_extended_parameters() -> None:
    assert parse_header_value('form-data; name="a\\"b"; filename=plain') == (
        "form-data",
        {"name": 'a"b', "filename": "plain"},
    )
    assert parse_header_value("form-data; filename=\"x\"; filename*=UTF-8''caf%C3%A9.jsonl")[1] == {
        "filename": "café.jsonl"
    }
    assert parse_header_value('Multipart/Form-Data; Boundary="q;b"') == (
        "multipart/form-data",
        {"boundary": "q;b"},
    )


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"", CT, "does not start"),
        (b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nno end", CT, "never ends"),
        (b"--XyZ\r\nContent-Disposition: form-data; name=a\r\nno blank line\r\n--XyZ--", CT, "blank line"),
        (_form(b"Content-Type: text/plain\r\n\r\nx"), CT, "Content-Disposition"),
        (_form(b"no colon here\r\n\r\nx"), CT, "malformed header"),
        (b"--XyZjunk\r\n", CT, "not followed by a line break"),
        (_form(b"x"), "multipart/form-data", "boundary"),
        (_form(b"x"), "multipart/form-data; boundary=" + "b" * 71, "boundary"),
        (_form(b"x"), "application/json", "not multipart/form-data"),
        (_form(*[b"Content-Disposition: form-data; name=a\r\n\r\nx"] * 65), CT, "more than 64 parts"),
    ],
)
def test_malformed_forms_are_refused_with_a_reason(body: bytes, content_type: str, fragment: str) -> None:
    with pytest.raises(MultipartError, match=fragment):
        parse_form_data(body, content_type)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=400), st.sampled_from([CT, "multipart/form-data; boundary=a", "text/plain"]))
def test_any_bytes_parse_or_raise_multipart_error(body: bytes, content_type: str) -> None:
    try:
        parts = parse_form_data(body, content_type)
    except MultipartError:
        return
    assert all(isinstance(p.content, bytes) for p in parts)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)), max_size=5), st.data())
def test_a_mangled_valid_form_never_raises_anything_else(
    fields: list[tuple[str, bytes]], data: st.DataObject
) -> None:
    body = _form(
        *[
            b'Content-Disposition: form-data; name="'
            + name.replace('"', "%22").encode()
            + b'"\r\n\r\n'
            + value
            for name, value in fields
        ]
    )
    cut = data.draw(st.integers(0, len(body)))
    junk = data.draw(st.binary(max_size=8))
    for candidate in (body, body[:cut], body[:cut] + junk + body[cut:]):
        with contextlib.suppress(MultipartError):
            parse_form_data(candidate, CT)


# -- the bytes of answers (wire.py) ---------------------------------------------------------------


def test_a_whole_answer_has_its_length_and_says_when_the_connection_ends() -> None:
    from llmroute_sidecar.web.wire import whole_head

    response = web.Response(text="hi", headers={"x-a": "1"})
    head, body = whole_head(response, close=False, version="1.1")
    assert (
        head
        == b"HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 2\r\n\r\n"
    )
    assert body == b"hi"
    assert whole_head(response, close=True, version="1.1")[0].endswith(b"connection: close\r\n\r\n")
    assert whole_head(response, close=False, version="1.0")[0].endswith(b"connection: keep-alive\r\n\r\n")
    assert whole_head(web.Response(status=204, body=b"x"), close=False, version="1.1") == (
        b"HTTP/1.1 204 No Content\r\n" + b"content-type: application/octet-stream\r\n\r\n",
        b"",
    )
    assert whole_head(web.Response(status=299, reason="Fine\r\nx: y"), close=False, version="1.1")[
        0
    ].startswith(b"HTTP/1.1 299 Fine  x: y\r\n"), "a reason cannot add a header line"


def test_a_streamed_answer_is_chunked_for_http_1_1_and_read_to_the_close_for_1_0() -> None:
    from llmroute_sidecar.web.wire import chunk, stream_head

    headers = web.ResponseHeaders({"content-type": "text/event-stream"})
    head, chunked, close = stream_head(200, None, headers, close=False, version="1.1")
    assert chunked and not close and b"transfer-encoding: chunked\r\n" in head
    head, chunked, close = stream_head(200, None, headers, close=False, version="1.0")
    assert not chunked and close and head.endswith(b"connection: close\r\n\r\n")
    headers["content-length"] = "10"
    head, chunked, _ = stream_head(200, None, headers, close=False, version="1.1")
    assert not chunked and head.count(b"content-length") == 1
    assert chunk(b"hello world") == b"b\r\nhello world\r\n"


def test_header_values_beyond_latin_1_go_out_as_utf8() -> None:
    from llmroute_sidecar.web.wire import whole_head

    head, _ = whole_head(web.Response(headers={"x-model": "modèle-€"}), close=False, version="1.1")
    assert "x-model: modèle-€\r\n".encode() in head


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/v1/models", (b"/v1/models", b"")),
        (b"/v1/files?limit=2&after=x#frag", (b"/v1/files", b"limit=2&after=x")),
        (b"*", (b"*", b"")),
        (b"http://host:1/v1/models?x=1", (b"/v1/models", b"x=1")),
        (b"nonsense", (None, b"")),
    ],
)
def test_request_targets_split_into_path_and_query(
    target: bytes, expected: tuple[bytes | None, bytes]
) -> None:
    from llmroute_sidecar.web.wire import split_target

    assert split_target(target) == expected


def test_gzip_and_deflate_bodies_are_decoded_under_the_limit() -> None:
    import gzip
    import zlib

    from llmroute_sidecar.web.request import decompress

    text = b'{"model": "chat"}'
    assert decompress(gzip.compress(text), "gzip", 100) == text
    assert decompress(zlib.compress(text), "deflate", 100) == text
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decompress(raw.compress(text) + raw.flush(), "deflate", 100) == text
    with pytest.raises(web.HTTPRequestEntityTooLarge):
        decompress(gzip.compress(b"0" * 10_000_000), "gzip", 1000)  # 10 MB from ~10 kB: refused
    with pytest.raises(web.HTTPBadRequest, match="not valid gzip"):
        decompress(b"not gzip", "gzip", 100)
    with pytest.raises(web.HTTPBadRequest, match="not valid gzip"):
        decompress(gzip.compress(text)[:-12], "gzip", 100)  # truncated
    with pytest.raises(web.HTTPUnsupportedEncoding):
        decompress(text, "br", 100)
