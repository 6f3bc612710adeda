"""A/B experiments, the sidecar's part, on real sidecars through the official OpenAI SDK: every request
of the experiment's model is tagged with its user's arm on the usage record (time to first chunk for
streams, never for cache hits), and ``POST /v1/feedback`` credits a score to the arm that answered,
once, for the tenant that got the answer, on any replica that shares the Redis.
"""

from __future__ import annotations

import httpx
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar
from llmroute_sidecar.usage import UsageRecord

from .conftest import FakeFactory, SidecarFactory, client_for

pytestmark = pytest.mark.asyncio

USERS = [f"user-{i}" for i in range(24)]


def experiment_route(llm: FakeProvider) -> str:
    return f"""\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: ab, namespace: demo}}
spec:
  models:
  - name: chat
    strategy: weighted
    split: [{{backend: good, weight: 50}}, {{backend: poor, weight: 50}}]
  - name: plain
    backends: [good]
  backends:
  - {{name: good, provider: openai-compatible, model: m-good, endpoint: {llm.base_url}}}
  - {{name: poor, provider: openai-compatible, model: m-poor, endpoint: {llm.base_url}}}
  cache:
    exact: {{ttl: 1m}}
  experiment: {{model: chat, minSamples: 10}}
"""


async def feedback(instance: Sidecar, body: object, tenant: str = "") -> httpx.Response:
    headers = {"x-llmroute-tenant": tenant} if tenant else {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{instance.http_port}") as client:
        return await client.post("/v1/feedback", json=body, headers=headers)


def arm_of(model: str) -> str:
    return {"m-good": "good", "m-poor": "poor"}[model]


async def test_records_carry_the_users_arm_and_feedback_reaches_any_replica(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    llm = await fake("openai-compatible")
    first, second = [await sidecar(experiment_route(llm), redis_url=redis_url) for _ in range(2)]
    answered: dict[str, tuple[str, str]] = {}  # response id -> (user, arm)
    async with client_for(first) as client:
        for user in USERS:
            response = await client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": f"hello from {user}"}],
                extra_headers={"x-llmroute-user": user, "x-llmroute-tenant": "acme"},
            )
            answered[response.id] = (user, arm_of(response.model))
        stream = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            extra_headers={"x-llmroute-user": "streamer", "x-llmroute-tenant": "acme"},
        )
        chunks = [chunk async for chunk in stream]
        cached = await client.chat.completions.create(  # the same prompt again: an exact-cache hit
            model="chat",
            messages=[{"role": "user", "content": f"hello from {USERS[0]}"}],
            extra_headers={"x-llmroute-user": USERS[0], "x-llmroute-tenant": "acme"},
        )
        await client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}])
    assert {arm for _, arm in answered.values()} == {"good", "poor"}  # both arms got users
    records: list[UsageRecord] = first.usage.drain()
    by_id = {r.request_id: r for r in records}
    tagged = [r for r in records if r.experiment_arm]
    assert len(tagged) == len(USERS) + 1  # every request of the model but the cache hit
    for record in tagged[: len(USERS)]:
        assert answered[record.response_id][1] == record.experiment_arm == record.backend
        assert record.ttft_seconds is None
    streamed = tagged[-1]
    assert streamed.ttft_seconds is not None and 0 < streamed.ttft_seconds <= streamed.latency_seconds
    assert streamed.response_id == chunks[0].id
    assert not any(r.experiment_arm for r in by_id.values() if r.model == "plain" or r.cache == "hit")
    assert cached.id in answered  # the cache replays the stored answer

    # Feedback: sent to the other replica (they share the Redis), once per response and tenant.
    good_id = next(i for i, (_, arm) in answered.items() if arm == "good")
    poor_id = next(i for i, (_, arm) in answered.items() if arm == "poor")
    assert (await feedback(second, {"response_id": good_id, "score": 1}, tenant="other")).status_code == 404
    accepted = await feedback(second, {"response_id": good_id, "score": 1, "label": "helpful"}, tenant="acme")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {
        "object": "feedback", "response_id": good_id, "model": "chat", "arm": "good", "score": 1.0,
    }  # fmt: skip
    again = await feedback(first, {"response_id": good_id, "score": 0}, tenant="acme")
    assert again.status_code == 404 and again.json()["error"]["code"] == "response_not_found"
    assert (await feedback(first, {"response_id": poor_id, "score": 0.25}, tenant="acme")).status_code == 200
    scored = [r for r in second.usage.drain() + first.usage.drain() if r.outcome == "feedback"]
    assert sorted((r.experiment_arm, r.feedback_score, r.feedback_label) for r in scored) == [
        ("good", 1.0, "helpful"),
        ("poor", 0.25, ""),
    ]
    assert {r.request_id for r in scored} == {f"feedback:{good_id}", f"feedback:{poor_id}"}
    assert (
        second.metrics.registry.get_sample_value(
            "llmroute_feedback_score_count", {"route": "demo/ab", "arm": "good"}
        )
        == 1.0
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"score": 1}, "response_id"),
        ({"response_id": 7, "score": 1}, "response_id"),
        ({"response_id": "x" * 300, "score": 1}, "response_id"),
        ({"response_id": "chatcmpl-1"}, "score"),
        ({"response_id": "chatcmpl-1", "score": True}, "score"),
        ({"response_id": "chatcmpl-1", "score": "0.9"}, "score"),
        ({"response_id": "chatcmpl-1", "score": 1e12}, "score"),
        ({"response_id": "chatcmpl-1", "score": -(10**15)}, "score"),
        ({"response_id": "chatcmpl-1", "score": 1, "label": ["a"]}, "label"),
        ({"response_id": "chatcmpl-1", "score": 1, "rating": 5}, "rating"),
    ],
)
async def test_bad_feedback_is_refused_naming_the_field(
    fake: FakeFactory, sidecar: SidecarFactory, body: dict[str, object], param: str
) -> None:
    llm = await fake("openai-compatible")
    instance = await sidecar(experiment_route(llm))
    response = await feedback(instance, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_without_redis_feedback_is_kept_by_the_sidecar_that_answered(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    llm = await fake("openai-compatible")
    instance = await sidecar(experiment_route(llm))
    async with client_for(instance) as client:
        response = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-llmroute-user": "u"}
        )
    answer = await feedback(instance, {"response_id": response.id, "score": -2.5})
    assert answer.status_code == 200 and answer.json()["arm"] == arm_of(response.model)
