"""``configserver.guard``: what a sidecar with a valid token may still not say."""

from __future__ import annotations

import pytest

from llmroute_operator.configserver.auth import Identity
from llmroute_operator.configserver.guard import (
    MAX_RECORD_COST_MICRO,
    Refusal,
    check_lease_call,
    check_sidecar_id,
    check_usage_batch,
)
from llmroute_proto.v1 import allowance_pb2 as apb
from llmroute_proto.v1 import usage_pb2 as upb

WHO = Identity(namespace="team-a", service_account="app", pod_name="chat-1", pod_uid="uid-1")


@pytest.mark.parametrize("sidecar_id", ["chat-1", "chat-1-0a1b2c3d4e5f", "sidecar-0a1b2c3d4e5f"])
def test_own_sidecar_ids(sidecar_id: str) -> None:
    check_sidecar_id(WHO, sidecar_id)


@pytest.mark.parametrize(
    ("sidecar_id", "code"),
    [("chat-2-abc", "PERMISSION_DENIED"), ("chat-10", "PERMISSION_DENIED"), ("", "INVALID_ARGUMENT")],
)
def test_foreign_or_missing_sidecar_ids(sidecar_id: str, code: str) -> None:
    with pytest.raises(Refusal) as caught:
        check_sidecar_id(WHO, sidecar_id)
    assert caught.value.code == code


def _batch(**record: object) -> upb.UsageBatch:
    return upb.UsageBatch(sidecar_id="chat-1-x", sequence=1, records=[upb.UsageRecord(**record)])  # type: ignore[arg-type]


def test_a_plain_batch_passes() -> None:
    check_usage_batch(
        WHO, _batch(request_id="r", route="chat", cost_micro_usd=12, budgets=["team"]), sidecar_id="chat-1-x"
    )
    huge_tokens = _batch(
        input_tokens=2**64 - 1, output_tokens=2**64 - 1, cost_micro_usd=MAX_RECORD_COST_MICRO
    )
    check_usage_batch(WHO, huge_tokens, sidecar_id="chat-1-x")  # tokens are not counted by the operator


@pytest.mark.parametrize(
    ("batch", "code", "words"),
    [
        (_batch(cost_micro_usd=-5), "INVALID_ARGUMENT", "outside"),
        (_batch(cost_micro_usd=2**63 - 1), "INVALID_ARGUMENT", "outside"),
        (_batch(route="team-b/chat"), "PERMISSION_DENIED", "names a namespace"),
        (_batch(budgets=["ok", "team-b/team"]), "PERMISSION_DENIED", "team-a"),
        (upb.UsageBatch(sidecar_id="chat-1-x", sequence=0), "INVALID_ARGUMENT", "starts at 1"),
        (upb.UsageBatch(sidecar_id="chat-1-y", sequence=2), "INVALID_ARGUMENT", "one sidecar_id"),
    ],
)
def test_refused_batches(batch: upb.UsageBatch, code: str, words: str) -> None:
    with pytest.raises(Refusal, match=words) as caught:
        check_usage_batch(WHO, batch, sidecar_id="chat-1-x")
    assert caught.value.code == code


def test_lease_calls() -> None:
    check_lease_call(WHO, apb.LeaseRequest(sidecar_id="chat-1-x", budget="team", requested_micro_usd=5))
    check_lease_call(WHO, apb.ReturnRequest(sidecar_id="chat-1-x", lease_id="l", spent_micro_usd=5))
    refused = [
        (apb.LeaseRequest(sidecar_id="chat-1-x", budget="team-b/team"), "PERMISSION_DENIED"),
        (apb.LeaseRequest(sidecar_id="web-1-x", budget="team"), "PERMISSION_DENIED"),
        (apb.LeaseRequest(sidecar_id="chat-1-x", budget="team", requested_micro_usd=-1), "INVALID_ARGUMENT"),
        (apb.RenewRequest(sidecar_id="chat-1-x", lease_id="l", spent_micro_usd=-1), "INVALID_ARGUMENT"),
    ]
    for request, code in refused:
        with pytest.raises(Refusal) as caught:
            check_lease_call(WHO, request)
        assert caught.value.code == code, request
