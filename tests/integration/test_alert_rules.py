"""The chart's alert rules (``helm/llmroute/rules/llmroute.rules.yaml``) are valid, do what their unit
tests say, and only use series the code really emits.

1. ``promtool check rules`` and ``promtool test rules tests/alerts/llmroute.rules.test.yaml`` (the
   input series there are named as prometheus-client exposes them: ``_total``, ``_bucket``, ...).
2. A real sidecar (standalone, in process) serves the official OpenAI SDK: answers, a stream, a cache
   hit, a budget refusal, failovers that open a breaker, and a request no backend can serve; a real
   :class:`OperatorMetrics` has each of its methods called. Every ``llmroute_*`` name in the rules'
   expressions must be among the sample names the two ``/metrics`` expositions then carry, and every
   ``llmroute:*`` name must be recorded by the rule file itself.

promtool comes from Debian's ``prometheus`` package (``hack/ensure-promtool.sh``, run by ``make``);
missing, it fails under ``LLMROUTE_E2E=require`` (CI) and skips elsewhere. The sidecar part needs no
promtool. ``test_dashboard_queries.py`` reuses the exposition helpers below.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import aiohttp
import openai
import pytest
import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmroute_operator.metrics import OperatorMetrics
from llmroute_sidecar.runtime import Sidecar

from .conftest import FakeFactory, SidecarFactory, client_for, route_yaml

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "llmroute" / "rules" / "llmroute.rules.yaml"
RULE_TESTS = ROOT / "tests" / "alerts" / "llmroute.rules.test.yaml"
# Metric names in PromQL: identifiers starting with llmroute (recorded ones contain a colon).
NAME = re.compile(r"(?<![A-Za-z0-9_:\"'])llmroute[A-Za-z0-9_:]*")


def find_promtool() -> str | None:
    return (
        os.environ.get("LLMROUTE_PROMTOOL")
        or shutil.which("promtool")
        or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    )


def require_promtool() -> str:
    binary = find_promtool()
    if binary is None:
        message = "promtool is not installed (make test installs it: hack/ensure-promtool.sh)"
        if os.environ.get("LLMROUTE_E2E") == "require":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def metric_names(expressions: Iterable[str]) -> set[str]:
    return {name for expr in expressions for name in NAME.findall(expr)}


def sample_names(exposition: str) -> set[str]:
    """Every sample name in a text exposition (``x_total``, ``x_bucket``, ``x_count``, ...)."""
    return {s.name for family in text_string_to_metric_families(exposition) for s in family.samples}


async def scrape(instance: Sidecar) -> str:
    url = f"http://127.0.0.1:{instance.admin_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


def operator_exposition() -> str:
    """A real OperatorMetrics with every recording method called once, as its /metrics shows it."""
    metrics = OperatorMetrics()
    metrics.reconciled("LLMRoute", "ok", 0.01)
    metrics.status_written("LLMRoute", "ok", 0.01)
    metrics.admitted("llmroute", "allowed", 0.002)
    metrics.injected("injected")
    metrics.sidecars_connected(3)
    metrics.config_acked("team-a", 0.05)
    metrics.config_nacked("team-a")
    metrics.budget_spent("team-a", "chat-monthly", 812.5)
    metrics.budget_state("team-a", "chat-monthly", "SoftLimited")
    metrics.budget_alert("team-a", "chat-monthly", 80)
    metrics.budget_limits("team-a", "chat-monthly", hard=1000.0, soft=800.0, forecast=1200.0)
    metrics.leader.set(1)
    metrics.ready.set(1)
    return generate_latest(metrics.registry).decode()


def _budget(tenant: str) -> str:
    return (
        "---\napiVersion: llmroute.io/v1alpha1\nkind: LLMBudget\n"
        "metadata: {name: broke, namespace: demo}\n"
        f"spec:\n  scope: {{tenant: {tenant}}}\n  period: {{type: daily}}\n  limits: {{hard: '0.000001'}}\n"
    )


async def sidecar_exposition(fake: FakeFactory, sidecar: SidecarFactory) -> str:
    """A standalone sidecar driven through every path the alerts and the dashboard read, scraped."""
    primary = await fake("openai", api_key="sk-primary")
    secondary = await fake("openai-compatible")
    resources = route_yaml(
        [
            {"name": "primary", "provider": "openai", "model": "gpt-4o", "endpoint": primary.base_url,
             "key": "sk-primary", "region": "us-east-1"},
            {"name": "secondary", "provider": "openai-compatible", "model": "llama-3",
             "endpoint": secondary.base_url, "region": "eu-west-1"},
        ],
        extra_spec=(
            "  cache: {exact: {ttl: 10m}}\n"
            "  resilience:\n"
            "    timeout: {perAttempt: 2s, total: 5s}\n"
            "    retries: {attempts: 1, backoff: {base: 1ms, max: 2ms}}\n"
            "    circuitBreaker: {consecutiveFailures: 2, cooldown: 30s, maxEjectedPercent: 50}\n"
        ),
    ) + _budget("broke")  # fmt: skip
    instance = await sidecar(resources)
    client = client_for(instance)
    ask = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    tenant = {"x-llmroute-tenant": "acme"}
    await client.chat.completions.create(**ask, extra_headers=tenant)  # type: ignore[call-overload]
    await client.chat.completions.create(**ask, extra_headers=tenant)  # type: ignore[call-overload]  # a hit
    fresh = {"x-llmroute-no-cache": "1", **tenant}
    stream = await client.chat.completions.create(**ask, stream=True, extra_headers=fresh)  # type: ignore[call-overload]
    async for _ in stream:
        pass
    with pytest.raises(openai.RateLimitError):  # the tenant's budget cannot cover one request
        await client.chat.completions.create(**ask, extra_headers={"x-llmroute-tenant": "broke"})  # type: ignore[call-overload]
    primary.set_faults(fail_rate=1.0, failure="status=503")
    for _ in range(3):  # retried, then fall back to the secondary; the primary's breaker opens
        await client.chat.completions.create(**ask, extra_headers=fresh)  # type: ignore[call-overload]
    secondary.set_faults(fail_rate=1.0, failure="status=503")
    for _ in range(2):  # nothing can serve; ejecting the secondary too would pass maxEjectedPercent
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(**ask, extra_headers=fresh)  # type: ignore[call-overload]
    return await scrape(instance)


def rule_expressions() -> tuple[list[str], set[str]]:
    """The expressions of every rule, and the names the file records."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    return [str(rule["expr"]) for rule in rules], {rule["record"] for rule in rules if "record" in rule}


def test_every_alert_has_for_severity_and_annotations() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert len(alerts) >= 14
    for alert in alerts:
        assert "for" in alert, alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert {"summary", "description", "runbook"} <= set(alert["annotations"]), alert["alert"]
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert {alert["alert"] for alert in alerts} <= tested, "every alert has a promtool test"


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = require_promtool()
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_rule_test_series_are_named_like_the_rules() -> None:
    """The promtool tests feed the names the rules read (so a renamed metric cannot pass unnoticed)."""
    expressions, recorded = rule_expressions()
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fed = {series["series"].split("{", 1)[0] for test in tests for series in test["input_series"]}
    assert metric_names(expressions) - recorded == fed


async def test_rule_metric_names_are_exposed_by_sidecar_and_operator(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    exposed = sample_names(await sidecar_exposition(fake, sidecar)) | sample_names(operator_exposition())
    expressions, recorded = rule_expressions()
    names = metric_names(expressions)
    assert {n for n in names if ":" in n} <= recorded, "recorded names are recorded by the file"
    missing = sorted(n for n in names if ":" not in n and n not in exposed)
    assert not missing, f"rules read series nothing exposes: {missing}"
