"""AWS Signature Version 4, written from AWS's published algorithm (no botocore).

:func:`sign` adds the ``Authorization`` header (and ``host``, ``x-amz-date``, ``x-amz-content-sha256``,
``x-amz-security-token`` for temporary credentials) to a request the Bedrock adapter built
(``adapters/bedrock.py``). The steps are public so the fake Bedrock (``llmroute_fakes/sigv4.py``) can
recompute a signature it received with exactly the same code:

1. :func:`canonical_request`: method, canonical URI (the path as sent, dot segments removed, then
   URI-encoded once more: services other than S3 double-encode), canonical query string (sorted,
   RFC 3986-encoded pairs), the signed headers as ``name:value`` lines (values trimmed, inner spaces
   collapsed), the signed header names, and the hex SHA-256 of the payload;
2. :func:`string_to_sign`: algorithm, timestamp, credential scope, hex SHA-256 of step 1;
3. :func:`signing_key`: HMAC chain ``"AWS4" + secret`` → date → region → service → ``aws4_request``;
4. :func:`signature`: hex HMAC-SHA256 of step 2 under step 3's key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "ALGORITHM",
    "canonical_request",
    "credential_scope",
    "payload_hash",
    "sign",
    "signature",
    "signing_key",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
_UNRESERVED = "-_.~"  # with letters and digits, what RFC 3986 (and AWS's UriEncode) leaves as is


def payload_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def credential_scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def canonical_request(
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body_hash: str,
) -> str:
    """Step 1. ``raw_path`` is the path as sent (percent-encoding intact); ``headers`` has lower-case
    names; ``signed_headers`` are lower-case and sorted."""
    header_lines = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers)
    return "\n".join(
        [
            method.upper(),
            quote(_remove_dot_segments(raw_path), safe="/~"),
            _canonical_query(query),
            header_lines,
            ";".join(signed_headers),
            body_hash,
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """Step 2."""
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """Step 3: the key for one day, region and service."""
    key = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(key: bytes, to_sign: str) -> str:
    """Step 4."""
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def sign(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    access_key_id: str,
    secret_access_key: str,
    session_token: str = "",
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """``headers`` (lower-cased) plus the SigV4 ones; every header given is signed.

    ``url`` must be exactly what goes on the wire (already percent-encoded; the HTTP client must not
    re-quote it), because the server recomputes the canonical request from what it receives.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    parts = urlsplit(url)
    out = {name.lower(): value for name, value in headers.items() if name.lower() != "authorization"}
    out["host"] = _host(parts.scheme, parts.netloc)
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = body_hash = payload_hash(body)
    if session_token:
        out["x-amz-security-token"] = session_token
    signed = sorted(out)
    canonical = canonical_request(method, parts.path or "/", parts.query, out, signed, body_hash)
    scope = credential_scope(date, region, service)
    key = signing_key(secret_access_key, date, region, service)
    out["authorization"] = (
        f"{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={';'.join(signed)}, "
        f"Signature={signature(key, string_to_sign(amz_date, scope, canonical))}"
    )
    return out


def _host(scheme: str, netloc: str) -> str:
    """The Host header an HTTP client sends: the default port is left out."""
    host = netloc.rpartition("@")[2].lower()
    default = {"https": ":443", "http": ":80"}.get(scheme.lower())
    if default and host.endswith(default):
        host = host[: -len(default)]
    return host


def _remove_dot_segments(path: str) -> str:
    if not path:
        return "/"
    output: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if output:
                output.pop()
        else:
            output.append(segment)
    normalized = "/" + "/".join(output)
    if path.endswith("/") and output:
        normalized += "/"
    return normalized


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((quote(unquote(key), safe=_UNRESERVED), quote(unquote(value), safe=_UNRESERVED)))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))
