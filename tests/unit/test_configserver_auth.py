"""Who a caller is (TokenReview answer -> Identity) and whether its claims agree (Node vs Identity)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from llmroute_operator.configserver.auth import (
    AuthError,
    Identity,
    TokenAuthenticator,
    authorize,
    bearer_token,
    identity_from_review,
)
from llmroute_proto.v1 import discovery_pb2 as dpb

POD = {"authentication.kubernetes.io/pod-name": ["chat-1"], "authentication.kubernetes.io/pod-uid": ["uid-1"]}
WHO = Identity(namespace="team-a", service_account="app", pod_name="chat-1", pod_uid="uid-1")


@dataclass(frozen=True)
class Review:
    authenticated: bool
    username: str = ""
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)
    error: str = ""


def test_identity_comes_from_the_verified_user() -> None:
    review = Review(True, "system:serviceaccount:team-a:app", POD)
    assert identity_from_review(review) == WHO


@pytest.mark.parametrize(
    ("review", "code", "words"),
    [
        (Review(False, error="token has expired"), "unauthenticated", "expired"),
        (Review(True, "alice", POD), "permission_denied", "not a ServiceAccount"),
        (Review(True, "system:serviceaccount:team-a", POD), "permission_denied", "not a ServiceAccount"),
        (Review(True, "system:serviceaccount:team-a:app", {}), "permission_denied", "not bound to a Pod"),
        (
            Review(
                True, "system:serviceaccount:team-a:app", {"authentication.kubernetes.io/pod-name": ["p"]}
            ),
            "permission_denied",
            "not bound to a Pod",
        ),
    ],
)
def test_refusals(review: Review, code: str, words: str) -> None:
    with pytest.raises(AuthError) as caught:
        identity_from_review(review)
    assert caught.value.code == code and words in caught.value.message


def test_claims_that_match_or_are_empty_pass() -> None:
    authorize(WHO, dpb.Node(id="x", namespace="team-a", pod_name="chat-1", pod_uid="uid-1"))
    authorize(WHO, dpb.Node(id="x"))


@pytest.mark.parametrize(
    "node",
    [
        dpb.Node(namespace="team-b"),
        dpb.Node(namespace="team-a", pod_name="someone-else"),
        dpb.Node(pod_uid="uid-2"),
    ],
)
def test_claims_that_disagree_are_denied(node: dpb.Node) -> None:
    with pytest.raises(AuthError) as caught:
        authorize(WHO, node)
    assert caught.value.code == "permission_denied"
    assert "team-a/chat-1" in caught.value.message


def test_bearer_token_from_metadata() -> None:
    assert bearer_token([("x-other", "1"), ("authorization", "Bearer abc.def")]) == "abc.def"
    assert bearer_token([("Authorization", b"bearer  tok ")]) == "tok"
    for bad in ([], [("authorization", "Basic abc")], [("authorization", "Bearer ")], None):
        with pytest.raises(AuthError) as caught:
            bearer_token(bad)
        assert caught.value.code == "unauthenticated"


class CountingApi:
    def __init__(self, answers: dict[str, Review]) -> None:
        self.answers = answers
        self.calls = 0

    async def token_review(self, token: str, audience: str) -> Review:
        self.calls += 1
        assert audience == "llmroute"
        return self.answers.get(token, Review(False, error="invalid"))

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, object]:
        raise LookupError(name)


def jwt(exp: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"header.{payload}.signature"


async def test_reviews_are_cached_briefly_and_never_past_token_expiry() -> None:
    now = [1000.0]
    token = jwt(exp=1030.0)
    api = CountingApi({token: Review(True, "system:serviceaccount:team-a:app", POD)})
    auth = TokenAuthenticator(api=api, ttl=60.0, clock=lambda: now[0], wall=lambda: now[0])
    assert await auth.authenticate(token) == WHO
    assert await auth.authenticate(token) == WHO
    assert api.calls == 1
    now[0] += 31.0  # the token expired before the cache ttl: review again
    await auth.authenticate(token)
    assert api.calls == 2


async def test_refusals_are_cached_for_the_negative_ttl() -> None:
    now = [0.0]
    api = CountingApi({})
    auth = TokenAuthenticator(api=api, negative_ttl=5.0, clock=lambda: now[0], wall=lambda: now[0])
    for _ in range(3):
        with pytest.raises(AuthError):
            await auth.authenticate("garbage")
    assert api.calls == 1
    now[0] += 6.0
    with pytest.raises(AuthError):
        await auth.authenticate("garbage")
    assert api.calls == 2


async def test_api_failures_propagate_and_are_not_cached() -> None:
    class Down(CountingApi):
        async def token_review(self, token: str, audience: str) -> Review:
            self.calls += 1
            raise ConnectionError("API server unreachable")

    api = Down({})
    auth = TokenAuthenticator(api=api)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await auth.authenticate("tok")
    assert api.calls == 2
