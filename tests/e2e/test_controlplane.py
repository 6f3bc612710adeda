"""The local control plane answers like a real cluster: version, TokenRequest and TokenReview."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llmroute_operator.devcluster.target import Cluster

pytestmark = pytest.mark.e2e

AUDIENCE = "llmroute"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"


def review(cluster: Cluster, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
    """The ``status`` of a TokenReview of ``token`` for ``audiences``."""
    answer = cluster.kubectl.create(
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences or [AUDIENCE]},
        }
    )
    status: dict[str, Any] = answer["status"]
    return status


def create_token(cluster: Cluster, namespace: str, sa: str, *extra: str) -> str:
    return cluster.run("create", "token", sa, "-n", namespace, *extra).stdout.strip()


def test_kubectl_version_reports_the_pinned_release(cluster: Cluster) -> None:
    server = cluster.json("version")["serverVersion"]
    if cluster.expected_version is not None:
        assert server["gitVersion"] == cluster.expected_version
    else:
        assert server["gitVersion"].startswith("v1.")


def test_token_request_is_authenticated_by_token_review(cluster: Cluster, namespace: str) -> None:
    cluster.run("create", "serviceaccount", "app", "-n", namespace)
    token = create_token(cluster, namespace, "app", "--audience", AUDIENCE)

    status = review(cluster, token)

    assert status["authenticated"] is True, status
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:app"
    assert f"system:serviceaccounts:{namespace}" in status["user"]["groups"]
    assert status["audiences"] == [AUDIENCE]


@pytest.mark.parametrize("audience", ["someone-else", None], ids=["other-audience", "default-audience"])
def test_token_for_another_audience_is_rejected(
    cluster: Cluster, namespace: str, audience: str | None
) -> None:
    cluster.run("create", "serviceaccount", "app", "-n", namespace)
    token = create_token(cluster, namespace, "app", *(["--audience", audience] if audience else []))

    status = review(cluster, token)

    assert not status.get("authenticated"), status
    assert "user" not in status or not status["user"].get("username")


def test_pod_bound_token_carries_the_pod_and_dies_with_it(cluster: Cluster, namespace: str) -> None:
    cluster.run("create", "serviceaccount", "app", "-n", namespace)
    pod = cluster.kubectl.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "demo"}},
            "spec": {
                "serviceAccountName": "app",
                "containers": [{"name": "main", "image": "example.invalid/never-pulled:1"}],
            },
        },
        namespace=namespace,
    )
    token = create_token(
        cluster,
        namespace,
        "app",
        "--audience",
        AUDIENCE,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "p",
    )

    status = review(cluster, token)

    assert status["authenticated"] is True, status
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:app"
    assert status["user"]["extra"][POD_NAME_EXTRA] == ["p"]
    assert status["user"]["extra"][POD_UID_EXTRA] == [pod["metadata"]["uid"]]

    # No kubelet ever ran it, so the Pod is deleted at once; the token bound to it stops working once
    # the API server's informer has seen the deletion and its token cache (10 s) has expired.
    cluster.run("delete", "pod", "p", "-n", namespace, "--wait=true")
    deadline = time.monotonic() + 30
    while review(cluster, token).get("authenticated"):
        assert time.monotonic() < deadline, "a token bound to a deleted Pod still authenticates after 30 s"
        time.sleep(1)
