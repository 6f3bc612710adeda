"""AWS Signature Version 4 checking for the fake Bedrock.

Neighbours: ``bedrock_api`` calls :func:`check_sigv4` from its ``authenticate``. Without known
secrets it only checks that a well-formed ``AWS4-HMAC-SHA256`` header is present; with them it
recomputes the signature with the sidecar's own signer steps (``llmroute_sidecar.aws.sigv4``: canonical
request, string to sign, signing key), so a test proves the client signs exactly what it sends. That
signer is pinned against botocore's in ``tests/unit/test_aws_sigv4.py``, so the fake does not merely
agree with the sidecar: both agree with AWS.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from llmroute_sidecar.aws.sigv4 import (
    ALGORITHM,
    canonical_request,
    payload_hash,
    signature,
    signing_key,
    string_to_sign,
)

__all__ = ["SigV4Failure", "check_sigv4"]

_FIELD = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")


@dataclass(frozen=True)
class SigV4Failure:
    """Why a request is refused: the AWS error code and message (both go into a 403)."""

    code: str
    message: str


def check_sigv4(
    *,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    service: str,
    secrets: Mapping[str, str] | None,
) -> SigV4Failure | None:
    """Check a request's SigV4 ``Authorization``. ``headers`` has lower-case names.

    ``raw_path`` is the request target as sent (percent-encoding intact, query included).
    """
    authorization = headers.get("authorization", "")
    if not authorization:
        return SigV4Failure("MissingAuthenticationTokenException", "Missing Authentication Token")
    algorithm, _, rest = authorization.partition(" ")
    fields = dict(_FIELD.findall(rest))
    if algorithm != ALGORITHM or set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        return SigV4Failure(
            "IncompleteSignatureException",
            f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters "
            f"with algorithm {ALGORITHM}.",
        )
    scope_parts = fields["Credential"].split("/")
    if len(scope_parts) != 5 or scope_parts[4] != "aws4_request":
        return SigV4Failure(
            "IncompleteSignatureException", "Credential must be <key>/<date>/<region>/<service>/aws4_request."
        )
    access_key, date, region, scoped_service, _ = scope_parts
    if scoped_service != service:
        return SigV4Failure(
            "InvalidSignatureException", f"Credential should be scoped to correct service: '{service}'."
        )
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(date):
        return SigV4Failure(
            "IncompleteSignatureException", "The x-amz-date header must match the credential date."
        )
    if secrets is None:
        return None
    secret = secrets.get(access_key)
    if secret is None:
        return SigV4Failure(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )

    signed_headers = fields["SignedHeaders"].split(";")
    path, _, query = raw_path.partition("?")
    body_hash = headers.get("x-amz-content-sha256") or payload_hash(body)
    canonical = canonical_request(method, path, query, headers, signed_headers, body_hash)
    scope = "/".join(scope_parts[1:])  # the credential scope omits the access key id
    key = signing_key(secret, date, region, service)
    expected = signature(key, string_to_sign(amz_date, scope, canonical))
    if not hmac.compare_digest(expected, fields["Signature"]):
        return SigV4Failure(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.",
        )
    return None
