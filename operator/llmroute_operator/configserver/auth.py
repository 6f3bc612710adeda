"""Who is calling the config server: authentication by TokenReview, authorization of claims.

The Istio pattern (``kube_jwt.go`` + ``xds/auth.go``), in two small steps:

1. :class:`TokenAuthenticator` takes the projected ServiceAccount token from the ``authorization:
   Bearer`` metadata, asks the API server (TokenReview, ``spec.audiences: [llmroute]``) whether it is
   valid, and derives the :class:`Identity` (namespace, service account, pod name and uid) from
   ``status.user`` only. Results are cached briefly (by token hash) so a reconnect storm does not
   become a TokenReview storm.
2. :func:`authorize` compares what the sidecar *claims* in its ``Node`` with that identity. Any
   disagreement is PERMISSION_DENIED; empty claims are filled from the identity.

Decision: a token that is not bound to a Pod (no ``pod-name``/``pod-uid`` extras, e.g. a plain
``kubectl create token``) is refused. Routes select pods by label, and a pod-less caller has no labels;
handing it the whole namespace's routes and credentials would make any ServiceAccount token in the
namespace a key to every Secret the routes reference.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from llmroute_proto.v1 import discovery_pb2 as dpb

__all__ = [
    "AUDIENCE",
    "AuthError",
    "Identity",
    "IdentityApi",
    "TokenAuthenticator",
    "authorize",
    "bearer_token",
    "identity_from_review",
]

log = logging.getLogger(__name__)

AUDIENCE = "llmroute"
SA_PREFIX = "system:serviceaccount:"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"


class Review(Protocol):
    """A TokenReview's answer (``llmroute_operator.kube.TokenReviewResult``)."""

    @property
    def authenticated(self) -> bool: ...
    @property
    def username(self) -> str: ...
    @property
    def extra(self) -> Mapping[str, Sequence[str]]: ...
    @property
    def error(self) -> str: ...


class IdentityApi(Protocol):
    """The Kubernetes calls the config server needs (``llmroute_operator.kube.KubeClient``)."""

    async def token_review(self, token: str, audience: str) -> Review:
        """Create a TokenReview for ``audience``; the answer's status."""
        ...

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any]:
        """The Pod object as a dict; raises LookupError when it does not exist."""
        ...


@dataclass(frozen=True)
class Identity:
    """A caller as the API server vouched for it."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.pod_name} (sa {self.service_account})"


class AuthError(Exception):
    """Refusal: ``code`` maps onto the gRPC status the server answers with."""

    def __init__(self, code: Literal["unauthenticated", "permission_denied"], message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of an ``authorization: Bearer <token>`` metadata entry."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else value
        scheme, _, token = text.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    raise AuthError("unauthenticated", "missing 'authorization: Bearer <token>' metadata")


def identity_from_review(review: Review) -> Identity:
    """Read the verified identity out of a TokenReview answer; refuse anything else."""
    if not review.authenticated:
        raise AuthError(
            "unauthenticated", f"token rejected by TokenReview: {review.error or 'not authenticated'}"
        )
    username = review.username
    if not username.startswith(SA_PREFIX) or username.count(":") != 3:
        raise AuthError("permission_denied", f"{username or 'the caller'} is not a ServiceAccount")
    namespace, _, service_account = username[len(SA_PREFIX) :].partition(":")
    pod_name, pod_uid = _single(review.extra, POD_NAME_EXTRA), _single(review.extra, POD_UID_EXTRA)
    if not pod_name or not pod_uid:
        raise AuthError(
            "permission_denied",
            f"token of {username} is not bound to a Pod; mint it with --bound-object-kind Pod "
            "(a projected token volume does that)",
        )
    return Identity(namespace=namespace, service_account=service_account, pod_name=pod_name, pod_uid=pod_uid)


def _single(extra: Mapping[str, Sequence[str]], key: str) -> str:
    values = extra.get(key) or ()
    if isinstance(values, str):
        return values
    return str(values[0]) if len(values) == 1 else ""


def authorize(identity: Identity, node: dpb.Node) -> None:
    """Refuse a Node whose claims disagree with the verified identity (empty claims are fine)."""
    for claim, claimed, verified in (
        ("namespace", node.namespace, identity.namespace),
        ("pod_name", node.pod_name, identity.pod_name),
        ("pod_uid", node.pod_uid, identity.pod_uid),
    ):
        if claimed and claimed != verified:
            raise AuthError(
                "permission_denied",
                f"node claims {claim}={claimed!r} but its token belongs to {identity}",
            )


def _token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, unverified: only used to bound how long a review is cached."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, binascii.Error, AttributeError):
        return None


class TokenAuthenticator:
    """TokenReview with a small cache: positive results for ``ttl`` (never past the token's expiry),
    refusals for ``negative_ttl`` (so garbage tokens cannot hammer the API server)."""

    def __init__(
        self,
        *,
        api: IdentityApi,
        audience: str = AUDIENCE,
        ttl: float = 60.0,
        negative_ttl: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self.audience = audience
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max = max_entries
        self._clock = clock
        self._wall = wall
        self._cache: OrderedDict[str, tuple[float, Identity | AuthError]] = OrderedDict()
        self.reviews = 0  # TokenReviews sent (tests and the benchmark read it)

    async def authenticate(self, token: str) -> Identity:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return _unwrap(hit[1])
        self.reviews += 1
        try:
            review = await self._api.token_review(token, self.audience)
            result: Identity | AuthError = identity_from_review(review)
        except AuthError as exc:
            result = exc
        ttl = self._ttl if isinstance(result, Identity) else self._negative_ttl
        expiry = _token_expiry(token)
        if expiry is not None and isinstance(result, Identity):
            ttl = min(ttl, expiry - self._wall())
        if ttl > 0:
            self._cache[key] = (now + ttl, result)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        if isinstance(result, AuthError):
            log.info("refused a token: %s", result.message)
        return _unwrap(result)


def _unwrap(result: Identity | AuthError) -> Identity:
    if isinstance(result, AuthError):
        raise AuthError(result.code, result.message)
    return result
