"""Abuse blocks reported on the usage stream become one Warning Event each on their route, with a
message that says who, why, for how long and what the window held; other records make none."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.duration_pb2 import Duration

from llmroute_operator.abuse_events import AbuseEvents, describe
from llmroute_proto.v1 import usage_pb2 as upb

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def block(route: str = "chat", **fields: Any) -> upb.UsageRecord:
    record = upb.UsageRecord(
        request_id="r1:abuse", route=route, outcome=upb.USAGE_OUTCOME_ABUSE_BLOCK,
        abuse_block=upb.AbuseBlock(
            reason="request_rate", block_for=Duration(seconds=600), window="requests=31 tokens=0 cost=0 policy_blocks=0"
        ),
    )  # fmt: skip
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def test_the_message_names_who_why_and_how_long() -> None:
    assert describe(block(user_raw="mallory")) == (
        "user 'mallory' blocked for 10m by abuse protection: request rate "
        "(window: requests=31 tokens=0 cost=0 policy_blocks=0)"
    )
    hashed = describe(block(user_sha256="ab" * 32))
    assert hashed.startswith("user sha256:abababababababab blocked")
    tenant = block(tenant="acme")
    tenant.abuse_block.by_tenant = True
    tenant.abuse_block.block_for.seconds = 30
    assert describe(tenant).startswith("tenant 'acme' blocked for 30s")
    assert describe(block()).startswith("anonymous users blocked")


class Entry:
    def involved(self) -> dict[str, Any]:
        return {"kind": "LLMRoute", "metadata": {"name": "chat", "namespace": "team-a"}}


class Routes:
    def entry(self, namespace: str, name: str) -> Entry | None:
        return Entry() if (namespace, name) == ("team-a", "chat") else None


async def test_each_block_becomes_one_event_and_nothing_waits_for_it() -> None:
    written: list[tuple[str, str]] = []

    async def emit(involved: Mapping[str, Any], message: str) -> None:
        written.append((involved["metadata"]["name"], message))

    events = AbuseEvents(routes=Routes(), emit=emit)
    records = [
        block(user_raw="mallory"),
        upb.UsageRecord(request_id="r2", route="chat", outcome=upb.USAGE_OUTCOME_SUCCESS),
        block(route="deleted", user_raw="eve"),  # no such route: no Event to attach
    ]
    assert events.count("team-a", "uid/s1", 1, records, NOW) == {}  # acks never wait for Events
    await events.close()
    assert [name for name, _ in written] == ["chat"] and "mallory" in written[0][1]
    assert events.emitted == 1


async def test_a_failing_api_server_loses_the_event_not_the_batch() -> None:
    async def emit(involved: Mapping[str, Any], message: str) -> None:
        raise ConnectionError("API server unreachable")

    events = AbuseEvents(routes=Routes(), emit=emit)
    events.count("team-a", "uid/s1", 1, [block(user_raw="mallory")], NOW)
    await asyncio.sleep(0)
    await events.close()
    assert events.emitted == 0
