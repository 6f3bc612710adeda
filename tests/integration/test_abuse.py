"""Abuse protection (``spec.abuse``) across three real sidecars sharing a real Redis, through the
official OpenAI SDK: a user whose request rate spikes is blocked on every sidecar within the window,
with a 403 ``abuse_blocked`` and ``Retry-After``, other users are not, and the block lifts by itself;
repeated policy refusals (PII blocks) block too.
"""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for

pytestmark = pytest.mark.asyncio

WINDOW_S, BLOCK_S, MIN_REQUESTS = 3, 3, 15


def abuse_route(llm: FakeProvider) -> str:
    return f"""\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: guarded, namespace: demo}}
spec:
  models:
  - name: chat
    backends: [llm]
  backends:
  - name: llm
    provider: openai-compatible
    model: model-llm
    endpoint: {llm.base_url}
    pricing: {{inputPerMillion: 2, outputPerMillion: 8}}
  privacy:
    pii: {{action: block, types: [email]}}
  abuse:
    window: {WINDOW_S}s
    baseline: 1m
    minRequests: {MIN_REQUESTS}
    maxPolicyBlocks: 4
    blockFor: {BLOCK_S}s
"""


async def three(fake: FakeFactory, sidecar: SidecarFactory, redis_url: str) -> list[Sidecar]:
    llm = await fake("openai-compatible")
    return [await sidecar(abuse_route(llm), redis_url=redis_url) for _ in range(3)]


async def ask(instance: Sidecar, user: str, text: str = "hello") -> int:
    """The status the app got; a 403 must be abuse protection's, with a Retry-After."""
    refused: openai.APIStatusError | None = None
    async with client_for(instance) as client:
        try:
            await client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": text}],
                extra_headers={"x-llmroute-user": user},
            )
        except openai.APIStatusError as exc:
            refused = exc
    if refused is None:
        return 200
    if refused.status_code == 403:
        assert refused.code == "abuse_blocked", refused.body
        assert int(refused.response.headers["retry-after"]) >= 1
    return refused.status_code


def total(instances: list[Sidecar], name: str, **labels: str) -> float:
    return sum(i.metrics.registry.get_sample_value(name, labels) or 0.0 for i in instances)


async def test_a_request_spike_is_blocked_on_every_sidecar_within_the_window_and_lifts(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    sidecars = await three(fake, sidecar, redis_url)
    await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)  # start at a window's start
    started = time.monotonic()
    statuses = [await ask(sidecars[i % 3], "mallory") for i in range(MIN_REQUESTS + 6)]
    blocked_after = time.monotonic() - started
    assert statuses == [200] * (MIN_REQUESTS - 1) + [403] * 7, statuses
    assert blocked_after < WINDOW_S  # blocked within the window it spiked in
    assert [await ask(s, "mallory") for s in sidecars] == [403, 403, 403]  # the block holds everywhere
    assert [await ask(s, "alice") for s in sidecars] == [200, 200, 200]  # only mallory is blocked
    assert total(sidecars, "llmroute_abuse_blocks_total", route="guarded", reason="request_rate") == 1
    assert total(sidecars, "llmroute_abuse_refused_total", route="guarded") == 10
    # One record of the block, from the sidecar that set it, for the operator's AbuseBlocked Event.
    blocks = [r for s in sidecars for r in s.usage.drain() if r.outcome == "abuse_blocked"]
    assert [(r.user, r.abuse[1] if r.abuse else None) for r in blocks] == [("mallory", "request_rate")]
    assert blocks[0].abuse is not None and blocks[0].abuse[2] == BLOCK_S
    await asyncio.sleep(BLOCK_S + 0.2)
    assert [await ask(s, "mallory") for s in sidecars] == [200, 200, 200]  # lifted by itself


async def test_repeated_policy_refusals_block_the_user(
    fake: FakeFactory, sidecar: SidecarFactory, redis_url: str
) -> None:
    sidecars = await three(fake, sidecar, redis_url)
    await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)
    refused = [await ask(sidecars[i % 3], "leaky", "write to ann@example.org") for i in range(4)]
    assert refused == [400, 400, 400, 400]  # pii_detected, each counted as a policy refusal
    for _ in range(40):  # the fourth refusal is counted in the background: allow it 2 s
        if (status := await ask(sidecars[1], "leaky")) == 403:
            break
        await asyncio.sleep(0.05)
    assert status == 403
    assert total(sidecars, "llmroute_abuse_blocks_total", route="guarded", reason="policy_blocks") == 1
    assert await ask(sidecars[2], "careful") == 200
