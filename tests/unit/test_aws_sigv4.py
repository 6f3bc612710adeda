"""SigV4 signing (``llmroute_sidecar.aws.sigv4``) against AWS's published example and botocore's signer.

botocore is a dev-only dependency (boto3's); the sidecar itself never imports it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from llmroute_sidecar.aws import sigv4

NOW = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)


def test_signing_key_and_signature_match_the_aws_documentation_example() -> None:
    # "Examples of how to derive a signing key for Signature Version 4" and the IAM ListUsers GET
    # example of the SigV4 documentation (credentials AKIDEXAMPLE / wJalr...EXAMPLEKEY).
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    key = sigv4.signing_key(secret, "20150830", "us-east-1", "iam")
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    headers = {
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        "host": "iam.amazonaws.com",
        "x-amz-date": "20150830T123600Z",
    }
    canonical = sigv4.canonical_request(
        "GET",
        "/",
        "Action=ListUsers&Version=2010-05-08",
        headers,
        sorted(headers),
        sigv4.payload_hash(b""),
    )
    scope = sigv4.credential_scope("20150830", "us-east-1", "iam")
    to_sign = sigv4.string_to_sign("20150830T123600Z", scope, canonical)
    assert to_sign.splitlines()[-1] == "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    assert sigv4.signature(key, to_sign) == "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"


def _botocore_authorization(
    url: str, body: bytes, headers: dict[str, str], *, token: str | None = None
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", "secret/key+x", token), "bedrock", "eu-west-1")
    # botocore signs x-amz-content-sha256 only when the header is present (S3 style); send it too.
    request.headers["X-Amz-Content-SHA256"] = sigv4.payload_hash(body)
    auth.add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("https://bedrock-runtime.eu-west-1.amazonaws.com/model/anthropic.claude-3%3A0/converse", None),
        (
            "http://127.0.0.1:8080/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A1%3Aprofile%2Fx/converse-stream",
            None,
        ),
        ("https://bedrock-runtime.eu-west-1.amazonaws.com:443/model/m/converse?b=2&a=1", "session-token"),
    ],
)
def test_sign_matches_botocore(url: str, token: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    signed = sigv4.sign(
        method="POST",
        url=url,
        headers=headers,
        body=body,
        access_key_id="AKIDEXAMPLE",
        secret_access_key="secret/key+x",
        session_token=token or "",
        region="eu-west-1",
        service="bedrock",
        now=NOW,
    )
    expected = _botocore_authorization(url, body, headers, token=token)
    assert signed["x-amz-date"] == expected["x-amz-date"] == "20150830T123600Z"
    assert signed["authorization"] == expected["authorization"]
    assert signed["x-amz-content-sha256"] == sigv4.payload_hash(body)
    assert signed.get("x-amz-security-token") == token
    assert signed["host"] == url.split("/")[2].removesuffix(":443")
    assert signed["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/bedrock/aws4_request, SignedHeaders="
    )


def test_the_canonical_uri_double_encodes_and_normalises() -> None:
    canonical = sigv4.canonical_request("post", "/a/./b/../model/x%3A1", "", {}, [], "e3b0")
    assert canonical.splitlines()[:2] == ["POST", "/a/model/x%253A1"]
