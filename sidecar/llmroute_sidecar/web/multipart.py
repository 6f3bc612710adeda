"""``multipart/form-data`` bodies (RFC 7578), as the OpenAI SDK sends ``POST /v1/files``.

Pure functions over a body already read whole: the request's body limit (``request.py``) is the
bound on what an upload can make the sidecar hold, so nothing here streams. Every malformation
(no boundary, a missing delimiter, a part without a blank line after its headers, a part that never
ends, too many parts, a header block too large) is a :class:`MultipartError` with a sentence the
caller turns into a 400. Parameters are read as RFC 9110 writes them (``name="quoted \\"string\\""``
or a token) plus RFC 8187's ``filename*=UTF-8''percent-encoded``, which some clients send for
non-ASCII names. Neighbours: ``batch/http.py`` (its only caller).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["MultipartError", "Part", "parse_form_data", "parse_header_value"]

_MAX_PARTS = 64
_MAX_PART_HEAD = 16 * 1024
_PARAM = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.DOTALL)
_BOUNDARY_CHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{1,70}")


class MultipartError(ValueError):
    """The body is not valid multipart/form-data."""


@dataclass(frozen=True, slots=True)
class Part:
    """One form field: its name, the filename of a file field, its headers and its content."""

    name: str | None
    filename: str | None
    content_type: str
    headers: dict[str, str]
    content: bytes


def parse_header_value(value: str) -> tuple[str, dict[str, str]]:
    """``"form-data; name=\\"file\\"; filename=\\"a.jsonl\\""`` -> (``"form-data"``, its parameters,
    names lower-case). A ``name*`` parameter (RFC 8187) is decoded and wins over ``name``."""
    main, sep, rest = value.partition(";")
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    if sep:
        for found in _PARAM.finditer(";" + rest):
            key, raw = found.group(1).lower(), found.group(2).strip()
            if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1], flags=re.DOTALL)
            if key.endswith("*"):
                extended[key[:-1]] = _extended_value(raw)
            else:
                params.setdefault(key, raw)
    params.update(extended)
    return main.strip().lower(), params


def _extended_value(raw: str) -> str:
    """RFC 8187: ``charset'language'percent-encoded``."""
    charset, _, rest = raw.partition("'")
    _language, _, encoded = rest.partition("'")
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        raise MultipartError(f"an extended parameter is not {charset or 'UTF-8'} text") from None


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_header_value(content_type)
    if kind != "multipart/form-data":
        raise MultipartError(f"the content type is {kind or 'missing'}, not multipart/form-data")
    boundary = params.get("boundary", "")
    if not _BOUNDARY_CHARS.fullmatch(boundary) or boundary.endswith(" "):
        raise MultipartError("the content type has no valid boundary parameter")
    return boundary.encode("ascii")


def parse_form_data(body: bytes, content_type: str, *, max_parts: int = _MAX_PARTS) -> list[Part]:
    """The parts of a ``multipart/form-data`` body, in order."""
    delimiter = b"--" + boundary_of(content_type)
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:  # a preamble (rare) ends with the line break before the first delimiter
        found = body.find(b"\r\n" + delimiter)
        if found < 0:
            raise MultipartError("the body does not start with the boundary's delimiter")
        pos = found + 2 + len(delimiter)
    parts: list[Part] = []
    separator = b"\r\n" + delimiter
    while True:
        if body.startswith(b"--", pos):
            return parts  # the close delimiter; what follows is an epilogue, ignored
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise MultipartError("a delimiter is not followed by a line break")
        start = line_end + 2
        if len(parts) >= max_parts:
            raise MultipartError(f"more than {max_parts} parts")
        end = body.find(separator, start)
        if end < 0:
            raise MultipartError("a part never ends (no closing delimiter)")
        parts.append(_part(body, start, end))
        pos = end + len(separator)


def _part(body: bytes, start: int, end: int) -> Part:
    if body.startswith(b"\r\n", start):
        head, content_start = b"", start + 2  # a part without headers
    else:
        head_end = body.find(b"\r\n\r\n", start, end)
        if head_end < 0:
            raise MultipartError("a part's headers are not followed by a blank line")
        head, content_start = body[start:head_end], head_end + 4
    if len(head) > _MAX_PART_HEAD:
        raise MultipartError("a part's headers are too large")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n") if head else ():
        name, colon, value = line.partition(b":")
        if not colon or not name.strip() or name != name.strip():
            raise MultipartError("a part has a malformed header line")
        headers.setdefault(name.decode("latin-1").lower(), value.strip().decode("utf-8", "replace"))
    disposition, params = parse_header_value(headers.get("content-disposition", ""))
    if disposition != "form-data":
        raise MultipartError("a part has no 'Content-Disposition: form-data' header")
    return Part(
        name=params.get("name"),
        filename=params.get("filename"),
        content_type=headers.get("content-type", "text/plain"),
        headers=headers,
        content=body[content_start:end],
    )
