"""LLMBudget in a standalone sidecar, through the official OpenAI SDK: the hard limit refuses with a
429 ``budget_exceeded`` and forwards nothing, the soft limit downgrades to the cheap tier, a free
backend needs no allowance (and a paid fallback past the limit is refused), and tenant and user
scopes charge only their own requests. The sidecar counts its own spend (``budget/source.py``,
``LocalSource``), seeded from ``status.spent`` when the YAML gives one.

Prices are chosen so costs are exact: 1000 USD per million tokens is 0.001 USD a token. A request
``"hi"`` with ``max_tokens=20`` reserves its estimate (3 + 4 + 1 prompt tokens + 20 output = 28 tokens,
0.028 USD) and costs what the fake reports (1 prompt + 9 completion tokens = 0.010 USD).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for

pytestmark = pytest.mark.timeout(20)

PAID = "pricing: {inputPerMillion: 1000, outputPerMillion: 1000}"
CHEAP = "pricing: {inputPerMillion: 1, outputPerMillion: 1}"
FREE = "pricing: {inputPerMillion: 0, outputPerMillion: 0}"
COST_OF_HI = 0.010  # 10 tokens at 0.001 USD (see the module docstring)


def policy_yaml(
    backends: Sequence[tuple[str, FakeProvider, str]],
    *,
    model: str = "",
    spec: str = "",
    budgets: Sequence[str] = (),
) -> str:
    """An LLMRoute ``policy`` in namespace ``demo`` over openai-compatible fakes, then LLMBudgets.

    ``backends``: (name, fake, extra backend YAML lines); ``model``: the logical model's lines after
    ``- name: chat`` (default: every backend in order); each budget is the YAML of one document.
    No retries, so a failing backend costs one attempt.
    """
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMRoute",
        "metadata: {name: policy, namespace: demo}",
        "spec:",
        "  models:",
        "  - name: chat",
        *(
            f"    {line}"
            for line in (model or f"backends: [{', '.join(n for n, _, _ in backends)}]").splitlines()
        ),
        "  backends:",
    ]
    for name, provider, extra in backends:
        lines += [
            f"  - name: {name}",
            "    provider: openai-compatible",
            f"    model: model-{name}",
            f"    endpoint: {provider.base_url}",
            *(f"    {line}" for line in extra.strip().splitlines()),
        ]
    lines.append(
        "  resilience:\n    timeout: {perAttempt: 2s, total: 5s}\n"
        "    retries: {attempts: 0, backoff: {base: 5ms, max: 10ms}}"
    )
    if spec:
        lines.append(spec.rstrip())
    text = "\n".join(lines) + "\n"
    for budget in budgets:
        text += "---\n" + budget.strip() + "\n"
    return text


def budget_yaml(
    name: str,
    scope: str,
    *,
    hard: str,
    soft: str | None = None,
    downgrade_to: str | None = None,
    spent: str | None = None,
    state: str | None = None,
) -> str:
    limits = f"{{soft: '{soft}', hard: '{hard}'}}" if soft is not None else f"{{hard: '{hard}'}}"
    lines = [
        "apiVersion: llmroute.io/v1alpha1",
        "kind: LLMBudget",
        f"metadata: {{name: {name}, namespace: demo}}",
        "spec:",
        f"  scope: {scope}",
        "  period: {type: daily}",
        f"  limits: {limits}",
    ]
    if downgrade_to is not None:
        lines.append(f"  onSoftLimit: {{downgradeTo: {downgrade_to}}}")
    status = {k: v for k, v in (("spent", spent), ("state", state)) if v is not None}
    if status:
        lines.append("status:")
        lines += [f"  {k}: '{v}'" if k == "spent" else f"  {k}: {v}" for k, v in status.items()]
    return "\n".join(lines)


async def _ask(
    instance: Sidecar,
    text: str = "hi",
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    async with client_for(instance) as client:
        return await client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[{"role": "user", "content": text}],
            max_tokens=20,
            extra_headers=headers or {},
            **extra,
        )


async def _stream(instance: Sidecar, text: str = "hi") -> tuple[Any, list[Any]]:
    """A streamed request: its raw response (headers) and every chunk."""
    async with client_for(instance) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": text}], max_tokens=20, stream=True
        )
        return raw, [chunk async for chunk in raw.parse()]


async def _refused(instance: Sidecar, text: str = "hi", **kwargs: Any) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as caught:
        await _ask(instance, text, **kwargs)
    return caught.value


def _assert_budget_refusal(error: openai.RateLimitError, budget: str) -> None:
    assert error.status_code == 429
    assert error.code == "budget_exceeded"
    body = error.body
    assert isinstance(body, dict)
    assert body["budget"] == budget
    assert budget in error.message
    # A daily period in UTC ends at the next midnight.
    reset_at = datetime.fromisoformat(body["reset_at"].replace("Z", "+00:00"))
    now = datetime.now(UTC)
    assert now < reset_at <= now + timedelta(days=1)
    assert (reset_at.hour, reset_at.minute, reset_at.second) == (0, 0, 0)
    assert error.response.headers["x-llmroute-budget"] == budget


async def test_the_hard_limit_refuses_once_the_allowance_is_spent(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    paid = await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml([("paid", paid, PAID)], budgets=[budget_yaml("cap", "{routes: [policy]}", hard="0.05")])
    )
    # Spent 0, 0.01, 0.02 leave at least the 0.028 estimate; at 0.03 spent, 0.02 is left: refused.
    for spent_before in (0.0, 0.01, 0.02):
        raw = await _ask(instance)
        assert float(raw.headers["x-llmroute-cost-usd"]) == pytest.approx(COST_OF_HI), spent_before
        assert raw.headers["x-llmroute-budgets"] == "cap"
    forwarded = len(paid.requests)
    assert forwarded == 3
    error = await _refused(instance)
    _assert_budget_refusal(error, "cap")
    assert len(paid.requests) == forwarded, "a refused request is not forwarded"
    # A stream is refused the same way, before the first byte.
    with pytest.raises(openai.RateLimitError) as caught:
        await _stream(instance)
    assert caught.value.code == "budget_exceeded"
    assert len(paid.requests) == forwarded
    outcomes = [r.outcome for r in instance.usage.drain()]
    assert outcomes == ["ok", "ok", "ok", "budget_exceeded", "budget_exceeded"]


async def test_a_budget_seeded_as_spent_refuses_the_first_request(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    paid = await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml(
            [("paid", paid, PAID)],
            budgets=[budget_yaml("cap", "{namespace: true}", hard="5", spent="5")],
        )
    )
    error = await _refused(instance)
    _assert_budget_refusal(error, "cap")
    assert "hard limit is reached" in error.message
    assert paid.requests == []


async def test_past_the_soft_limit_requests_are_downgraded_to_the_small_tier(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    """Crossing the soft limit by the sidecar's own spend (no status in the YAML) downgrades."""
    large, small = await fake("openai-compatible"), await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml(
            [("large", large, f"tier: large\n{PAID}"), ("small", small, f"tier: small\n{CHEAP}")],
            budgets=[
                budget_yaml("soft", "{routes: [policy]}", hard="100", soft="0.015", downgrade_to="small")
            ],
        )
    )
    # 0 then 0.01 spent: below 0.015, the large tier serves.
    for _ in range(2):
        raw = await _ask(instance)
        assert raw.headers["x-llmroute-backend"] == "large"
        assert "x-llmroute-downgraded" not in raw.headers
    # 0.02 spent: past the soft limit.
    for _ in range(2):
        raw = await _ask(instance)
        assert raw.headers["x-llmroute-backend"] == "small"
        assert raw.headers["x-llmroute-downgraded"].startswith("small")
        assert "soft" in raw.headers["x-llmroute-downgraded"]
    assert (len(large.requests), len(small.requests)) == (2, 2)


async def test_a_budget_seeded_past_its_soft_limit_downgrades_from_the_first_request(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    large, small = await fake("openai-compatible"), await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml(
            [("large", large, f"tier: large\n{PAID}"), ("small", small, f"tier: small\n{CHEAP}")],
            budgets=[
                budget_yaml(
                    "soft",
                    "{routes: [policy]}",
                    hard="100",
                    soft="1",
                    downgrade_to="small",
                    spent="2",
                    state="SoftLimited",
                )
            ],
        )
    )
    raw = await _ask(instance)
    assert raw.headers["x-llmroute-backend"] == "small"
    assert raw.headers["x-llmroute-downgraded"] == "small; budget=soft"
    stream, chunks = await _stream(instance)
    assert stream.headers["x-llmroute-backend"] == "small"
    assert stream.headers["x-llmroute-downgraded"] == "small; budget=soft"
    assert chunks
    assert large.requests == []


async def test_a_failing_free_primary_does_not_fall_back_into_a_paid_backend_past_the_limit(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    free, paid = await fake("openai-compatible"), await fake("openai-compatible")
    free.set_faults("status=503")
    instance = await sidecar(
        policy_yaml(
            [("free", free, FREE), ("paid", paid, PAID)],
            budgets=[budget_yaml("cap", "{routes: [policy]}", hard="1", spent="1")],
        )
    )
    error = await _refused(instance)
    _assert_budget_refusal(error, "cap")
    assert len(free.requests) == 1, "the free primary was tried"
    assert paid.requests == [], "the paid fallback was refused before anything was sent"


async def test_a_failing_free_primary_falls_back_to_a_paid_backend_with_budget_left(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    free, paid = await fake("openai-compatible"), await fake("openai-compatible")
    free.set_faults("status=503")
    instance = await sidecar(
        policy_yaml(
            [("free", free, FREE), ("paid", paid, PAID)],
            budgets=[budget_yaml("cap", "{routes: [policy]}", hard="1", spent="0.5")],
        )
    )
    raw = await _ask(instance)
    assert raw.headers["x-llmroute-backend"] == "paid"
    assert raw.headers["x-llmroute-attempts"] == "2"
    assert float(raw.headers["x-llmroute-cost-usd"]) == pytest.approx(COST_OF_HI)
    assert len(paid.requests) == 1


async def test_free_backends_stay_usable_when_the_budget_is_exhausted(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    free, paid = await fake("openai-compatible"), await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml(
            [("free", free, FREE), ("paid", paid, PAID)],
            budgets=[budget_yaml("cap", "{routes: [policy]}", hard="1", spent="3", state="Exhausted")],
        )
    )
    for _ in range(3):
        raw = await _ask(instance)
        assert raw.headers["x-llmroute-backend"] == "free"
        assert float(raw.headers["x-llmroute-cost-usd"]) == 0.0
    _, chunks = await _stream(instance)
    assert "hi" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(free.requests) == 4 and paid.requests == []
    records = instance.usage.drain()
    assert [(r.outcome, r.cost_micro_usd, r.budgets) for r in records] == [("ok", 0, ("cap",))] * 4


async def test_a_tenant_budget_charges_only_that_tenant(fake: FakeFactory, sidecar: SidecarFactory) -> None:
    paid = await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml(
            [("paid", paid, PAID)],
            budgets=[
                budget_yaml("acme", "{tenant: acme}", hard="100"),
                budget_yaml("initech", "{tenant: initech}", hard="1", spent="1"),
            ],
        )
    )
    raw = await _ask(instance, headers={"x-llmroute-tenant": "acme"})
    assert raw.headers["x-llmroute-budgets"] == "acme"
    raw = await _ask(instance, headers={"x-llmroute-tenant": "globex"})
    assert "x-llmroute-budgets" not in raw.headers
    await _ask(instance)  # no tenant at all
    error = await _refused(instance, headers={"x-llmroute-tenant": "initech"})
    _assert_budget_refusal(error, "initech")
    assert len(paid.requests) == 3
    records = instance.usage.drain()
    assert [(r.tenant, r.budgets, r.outcome) for r in records] == [
        ("acme", ("acme",), "ok"),
        ("globex", (), "ok"),
        ("", (), "ok"),
        ("initech", ("initech",), "budget_exceeded"),
    ]
    assert records[0].cost_micro_usd == round(COST_OF_HI * 1e6)


async def test_a_user_budget_keys_on_the_user_header_and_the_openai_user_field(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    paid = await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml(
            [("paid", paid, PAID)],
            budgets=[
                budget_yaml("alice", "{user: alice}", hard="1", spent="1"),
                budget_yaml("carol", "{user: carol}", hard="100"),
            ],
        )
    )
    _assert_budget_refusal(await _refused(instance, headers={"x-llmroute-user": "alice"}), "alice")
    _assert_budget_refusal(await _refused(instance, user="alice"), "alice")
    assert paid.requests == []
    raw = await _ask(instance, user="bob")
    assert "x-llmroute-budgets" not in raw.headers
    raw = await _ask(instance, user="carol")
    assert raw.headers["x-llmroute-budgets"] == "carol"
    raw = await _ask(instance, headers={"x-llmroute-user": "carol"}, user="alice")
    assert raw.headers["x-llmroute-budgets"] == "carol", "the header wins over the body's user field"
    records = instance.usage.drain()
    assert [(r.user, r.budgets, r.outcome) for r in records] == [
        ("alice", ("alice",), "budget_exceeded"),
        ("alice", ("alice",), "budget_exceeded"),
        ("bob", (), "ok"),
        ("carol", ("carol",), "ok"),
        ("carol", ("carol",), "ok"),
    ]


async def test_a_request_in_several_budgets_is_charged_to_each(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    paid = await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml(
            [("paid", paid, PAID)],
            budgets=[
                budget_yaml("acme", "{tenant: acme}", hard="100"),
                budget_yaml("route", "{routes: [policy]}", hard="0.035"),
            ],
        )
    )
    raw = await _ask(instance, headers={"x-llmroute-tenant": "acme"})
    assert set(raw.headers["x-llmroute-budgets"].split(",")) == {"acme", "route"}
    # 0.01 of the route budget's 0.035 is spent: the next 0.028 estimate does not fit it.
    error = await _refused(instance, headers={"x-llmroute-tenant": "acme"})
    _assert_budget_refusal(error, "route")
    records = instance.usage.drain()
    assert [set(r.budgets) for r in records] == [{"acme", "route"}, {"acme", "route"}]
    assert len(paid.requests) == 1


async def test_streamed_answers_are_charged_against_the_hard_limit(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    paid = await fake("openai-compatible")
    instance = await sidecar(
        policy_yaml([("paid", paid, PAID)], budgets=[budget_yaml("cap", "{routes: [policy]}", hard="0.05")])
    )
    for _ in range(3):
        _, chunks = await _stream(instance)
        assert "hi" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(paid.requests) == 3
    error = await _refused(instance)
    _assert_budget_refusal(error, "cap")
    assert len(paid.requests) == 3
    records = instance.usage.drain()
    assert [r.cost_micro_usd for r in records] == [round(COST_OF_HI * 1e6)] * 3 + [0]
