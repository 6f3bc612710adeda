"""The AWS event-stream binary framing (``application/vnd.amazon.eventstream``), both directions.

Bedrock's ConverseStream answers with it. :class:`EventStreamDecoder` takes the body one network read
at a time (``adapters/bedrock.py``); :func:`encode_message` builds frames (the fake Bedrock in
``llmroute_fakes/bedrock_api.py``, and tests). A message is::

    prelude:  total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes (uint32)
    headers:  name length (uint8) | name (UTF-8) | value type (uint8) | value
    payload
    message CRC32 of everything before it (uint32)

all integers big-endian, CRC32 as ``zlib.crc32``. Header value types: 0/1 boolean true/false (no
value bytes), 2 int8, 3 int16, 4 int32, 5 int64, 6 bytes and 7 string (uint16 length, then the
bytes), 8 timestamp (int64 milliseconds since the epoch), 9 UUID (16 bytes).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

__all__ = [
    "EVENTSTREAM_CONTENT_TYPE",
    "EventStreamDecoder",
    "EventStreamError",
    "HeaderValue",
    "Message",
    "decode_messages",
    "encode_message",
    "event_message",
    "exception_message",
]

EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"

HeaderValue = bool | int | bytes | str | datetime | uuid.UUID

_PRELUDE = struct.Struct(">III")  # total length, headers length, prelude CRC
_CRC = struct.Struct(">I")
_OVERHEAD = _PRELUDE.size + _CRC.size  # a message with no headers and no payload
# AWS limits: 16 MiB of payload and 128 KiB of headers per message. Anything larger is garbage.
_MAX_MESSAGE = 16 * 1024 * 1024 + 128 * 1024 + _OVERHEAD
_MAX_HEADERS = 128 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_TRUE, _FALSE, _BYTE, _SHORT, _INT, _LONG, _BYTES, _STRING, _TIMESTAMP, _UUID = range(10)
_FIXED = {_BYTE: struct.Struct(">b"), _SHORT: struct.Struct(">h"), _INT: struct.Struct(">i")}
_INT64 = struct.Struct(">q")
_LENGTH = struct.Struct(">H")


class EventStreamError(ValueError):
    """A frame that is malformed, oversized, truncated, or fails one of its checksums."""


@dataclass(frozen=True)
class Message:
    """One decoded message."""

    headers: Mapping[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str:
        """A string header's value, or ``""`` when it is absent or not a string."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else ""


# --- encoding ---------------------------------------------------------------------------------------


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """One framed message. ``int`` headers are sent as int32 when they fit, else int64."""
    encoded_headers = b"".join(_encode_header(name, value) for name, value in headers.items())
    total = _OVERHEAD + len(encoded_headers) + len(payload)
    if len(encoded_headers) > _MAX_HEADERS or total > _MAX_MESSAGE:
        raise ValueError("event-stream message too large")
    prelude = struct.pack(">II", total, len(encoded_headers))
    head = prelude + _CRC.pack(zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(encoded_headers, zlib.crc32(head)))
    return head + encoded_headers + payload + _CRC.pack(crc)


def _encode_header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode()
    if not 0 < len(raw_name) <= 255:
        raise ValueError(f"event-stream header name {name!r} must be 1-255 bytes")
    head = bytes([len(raw_name)]) + raw_name
    if isinstance(value, bool):
        return head + bytes([_TRUE if value else _FALSE])
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return head + bytes([_INT]) + _FIXED[_INT].pack(value)
        return head + bytes([_LONG]) + _INT64.pack(value)
    if isinstance(value, datetime):
        millis = (value - _EPOCH) // timedelta(milliseconds=1)
        return head + bytes([_TIMESTAMP]) + _INT64.pack(millis)
    if isinstance(value, uuid.UUID):
        return head + bytes([_UUID]) + value.bytes
    kind, raw = (_STRING, value.encode()) if isinstance(value, str) else (_BYTES, bytes(value))
    if len(raw) > 0xFFFF:
        raise ValueError(f"event-stream header {name!r} is too long")
    return head + bytes([kind]) + _LENGTH.pack(len(raw)) + raw


def event_message(event_type: str, payload: Any) -> bytes:
    """A normal event (``:message-type: event``) with a JSON payload, as AWS services send them."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, orjson.dumps(payload))


def exception_message(exception_type: str, payload: Any) -> bytes:
    """A modelled in-stream exception (``:message-type: exception``), e.g. ``throttlingException``."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, orjson.dumps(payload))


# --- decoding ---------------------------------------------------------------------------------------


class EventStreamDecoder:
    """Bytes in (split anywhere), complete and verified messages out.

    The prelude is checked as soon as its 12 bytes are in, so a corrupt or non-event-stream body fails
    at once instead of waiting for a bogus length's worth of bytes.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._checked_prelude = False

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back; a body that ends cleanly leaves none."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= _PRELUDE.size:
            total, headers_length, prelude_crc = _PRELUDE.unpack_from(buffer, offset)
            if not self._checked_prelude:
                _check_prelude(buffer, offset, total, headers_length, prelude_crc)
                self._checked_prelude = True
            if len(buffer) - offset < total:
                break
            messages.append(_decode_frame(memoryview(buffer)[offset : offset + total], headers_length))
            offset += total
            self._checked_prelude = False
        if offset:
            del self._buffer[:offset]
        return messages


def _check_prelude(buffer: bytearray, offset: int, total: int, headers_length: int, crc: int) -> None:
    if zlib.crc32(memoryview(buffer)[offset : offset + 8]) != crc:
        raise EventStreamError("event-stream prelude CRC mismatch")
    if total < _OVERHEAD or total > _MAX_MESSAGE:
        raise EventStreamError(f"event-stream message length {total} is out of range")
    if headers_length > min(_MAX_HEADERS, total - _OVERHEAD):
        raise EventStreamError(f"event-stream headers length {headers_length} is out of range")


def _decode_frame(frame: memoryview, headers_length: int) -> Message:
    total = len(frame)
    (message_crc,) = _CRC.unpack_from(frame, total - _CRC.size)
    if zlib.crc32(frame[: total - _CRC.size]) != message_crc:
        raise EventStreamError("event-stream message CRC mismatch")
    start = _PRELUDE.size
    headers = _decode_headers(bytes(frame[start : start + headers_length]))
    return Message(headers=headers, payload=bytes(frame[start + headers_length : total - _CRC.size]))


def _decode_headers(raw: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos = 0
    try:
        while pos < len(raw):
            name_length = raw[pos]
            name = raw[pos + 1 : pos + 1 + name_length].decode()
            pos += 1 + name_length
            kind = raw[pos]
            pos += 1
            value: HeaderValue
            if kind in (_TRUE, _FALSE):
                value = kind == _TRUE
            elif kind in _FIXED:
                (value,) = _FIXED[kind].unpack_from(raw, pos)
                pos += _FIXED[kind].size
            elif kind in (_LONG, _TIMESTAMP):
                (number,) = _INT64.unpack_from(raw, pos)
                pos += _INT64.size
                value = number if kind == _LONG else _EPOCH + timedelta(milliseconds=number)
            elif kind in (_BYTES, _STRING):
                (length,) = _LENGTH.unpack_from(raw, pos)
                pos += _LENGTH.size
                chunk = raw[pos : pos + length]
                if len(chunk) != length:
                    raise EventStreamError(f"event-stream header {name!r} is truncated")
                value = chunk.decode() if kind == _STRING else chunk
                pos += length
            elif kind == _UUID:
                if pos + 16 > len(raw):
                    raise EventStreamError(f"event-stream header {name!r} is truncated")
                value = uuid.UUID(bytes=raw[pos : pos + 16])
                pos += 16
            else:
                raise EventStreamError(f"event-stream header {name!r} has unknown type {kind}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"malformed event-stream headers: {exc}") from None
    return headers


def decode_messages(data: bytes) -> list[Message]:
    """Decode a complete body; raises :class:`EventStreamError` if it ends mid-message."""
    decoder = EventStreamDecoder()
    messages = decoder.feed(data)
    if decoder.pending:
        raise EventStreamError(f"event-stream body ends {decoder.pending} bytes into a message")
    return messages
