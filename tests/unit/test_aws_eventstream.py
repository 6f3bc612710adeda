"""The AWS event-stream codec (``llmroute_sidecar.aws.eventstream``): round trips, any split of the
bytes, every header type, and corrupt or truncated frames detected. botocore's own parser (dev-only)
judges the encoder, so the two directions are not merely consistent with each other."""

from __future__ import annotations

import struct
import uuid
import zlib
from datetime import UTC, datetime

import pytest
from botocore.eventstream import EventStreamBuffer

from llmroute_sidecar.aws.eventstream import (
    EventStreamDecoder,
    EventStreamError,
    HeaderValue,
    Message,
    decode_messages,
    encode_message,
    event_message,
    exception_message,
)

HEADERS: dict[str, HeaderValue] = {
    ":event-type": "contentBlockDelta",
    "yes": True,
    "no": False,
    "small": 7,
    "big": 2**40,
    "blob": b"\x00\x01",
    "when": datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


def _stream() -> bytes:
    return (
        event_message("messageStart", {"role": "assistant"})
        + encode_message(HEADERS, b"payload")
        + exception_message("throttlingException", {"message": "slow down"})
        + encode_message({}, b"")
    )


def test_round_trip_with_every_header_type() -> None:
    start, typed, exception, empty = decode_messages(_stream())
    assert start.header(":event-type") == "messageStart" and start.payload == b'{"role":"assistant"}'
    assert dict(typed.headers) == HEADERS and typed.payload == b"payload"
    assert exception.header(":message-type") == "exception"
    assert exception.header(":exception-type") == "throttlingException"
    assert empty == Message(headers={}, payload=b"")
    assert typed.header("small") == "", "header() reads strings only"


def test_botocore_parses_what_the_encoder_writes() -> None:
    parser = EventStreamBuffer()
    parser.add_data(_stream())
    parsed = list(parser)
    assert [m.headers.get(":event-type") for m in parsed] == ["messageStart", "contentBlockDelta", None, None]
    assert parsed[1].headers["yes"] is True and parsed[1].headers["big"] == 2**40
    assert parsed[1].headers["blob"] == b"\x00\x01" and parsed[1].payload == b"payload"
    assert parsed[2].headers[":exception-type"] == "throttlingException"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 11, 12, 13, 64, 1000])
def test_any_split_of_the_bytes_decodes_the_same(size: int) -> None:
    data = _stream()
    decoder = EventStreamDecoder()
    messages: list[Message] = []
    for start in range(0, len(data), size):
        messages.extend(decoder.feed(data[start : start + size]))
    assert messages == decode_messages(data)
    assert decoder.pending == 0


def test_a_partial_message_is_held_back_until_complete() -> None:
    frame = event_message("metadata", {"usage": {}})
    decoder = EventStreamDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == len(frame) - 1
    assert len(decoder.feed(frame[-1:])) == 1 and decoder.pending == 0


def test_corruption_is_detected() -> None:
    frame = event_message("contentBlockDelta", {"delta": {"text": "hi"}})
    for index, what in ((5, "prelude CRC"), (20, "message CRC"), (len(frame) - 1, "message CRC")):
        corrupted = bytearray(frame)
        corrupted[index] ^= 0x01
        with pytest.raises(EventStreamError, match=what):
            EventStreamDecoder().feed(bytes(corrupted))
    with pytest.raises(EventStreamError, match="prelude CRC"):
        EventStreamDecoder().feed(b"<html>Bad gateway</html>")  # fails at once, not after "<htm" bytes


def test_a_corrupt_prelude_fails_before_its_message_is_complete() -> None:
    corrupted = bytearray(event_message("messageStop", {"stopReason": "end_turn"}))
    corrupted[2] ^= 0x40
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(bytes(corrupted[:12]))


def test_truncated_bodies_and_bad_lengths() -> None:
    frame = event_message("messageStop", {})
    with pytest.raises(EventStreamError, match="ends"):
        decode_messages(frame + frame[:10])
    prelude = struct.pack(">II", 8, 0)  # shorter than the 16 bytes of overhead
    with pytest.raises(EventStreamError, match="length"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))
    prelude = struct.pack(">II", 32, 40)  # headers longer than the message
    with pytest.raises(EventStreamError, match="headers length"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))


def test_encoder_limits() -> None:
    with pytest.raises(ValueError, match="1-255 bytes"):
        encode_message({"x" * 256: "v"}, b"")
    with pytest.raises(ValueError, match="too long"):
        encode_message({"h": "v" * 70000}, b"")
