"""The chart's Grafana dashboard (``helm/llmroute/dashboards/llmroute.json``) queries only series the
sidecar and the operator really expose, covers the panels SREs need, and its PromQL parses.

The sidecar is real (standalone, in process, driven by the official OpenAI SDK: answers, a stream, a
cache hit, a budget refusal, failovers that open a breaker, an unservable request) and so is
:class:`OperatorMetrics`; see ``test_alert_rules.py`` for the helpers. The dashboard must not depend on
recorded (``llmroute:*``) series: the PrometheusRule is optional. Syntax is checked by promtool
(``check rules`` on the expressions as recording rules, Grafana's variables substituted), which
skips without promtool outside CI like the rule tests.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import FakeFactory, SidecarFactory
from .test_alert_rules import (
    ROOT,
    metric_names,
    operator_exposition,
    require_promtool,
    sample_names,
    sidecar_exposition,
)

pytestmark = pytest.mark.timeout(60)

DASHBOARD = ROOT / "helm" / "llmroute" / "dashboards" / "llmroute.json"
# Grafana's variables, as a query would be sent for "All" over a 5 minute rate interval.
VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*"}


def _panels() -> list[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for panel in panels:
            out.append(panel)
            out += walk(panel.get("panels", []))
        return out

    return walk(json.loads(DASHBOARD.read_text())["panels"])


def _expressions() -> list[str]:
    return [target["expr"] for panel in _panels() for target in panel.get("targets", [])]


def test_dashboard_has_the_panels_sres_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "llmroute-overview"
    titles = " | ".join(p["title"].lower() for p in _panels())
    for needed in (
        "per backend and region",
        "errors",
        "latency",
        "first token",
        "failovers",
        "circuit breakers",
        "cache hit ratio",
        "budget spend",
        "tokens per tenant",
    ):
        assert needed in titles, needed
    queries = " ".join(_expressions())
    for metric in ("histogram_quantile(0.99", "llmroute_backend_info", "llmroute_usage_tokens_total"):
        assert metric in queries
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    promtool = require_promtool()
    rules = []
    for i, expr in enumerate(_expressions()):
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_dashboard_metric_names_are_exposed_by_sidecar_and_operator(
    fake: FakeFactory, sidecar: SidecarFactory
) -> None:
    text = await sidecar_exposition(fake, sidecar)
    exposed = sample_names(text) | sample_names(operator_exposition())
    names = metric_names(_expressions())
    assert not [n for n in names if ":" in n], "the dashboard works without the recording rules"
    missing = sorted(n for n in names if n not in exposed)
    assert not missing, f"dashboard queries series nothing exposes: {missing}"
    # The region join has something to join with, and the breaker panel something to show.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    regions = {(s.labels["backend"], s.labels["region"]) for s in families["llmroute_backend_info"].samples}
    assert regions == {("primary", "us-east-1"), ("secondary", "eu-west-1")}
    opened = [
        s
        for s in families["llmroute_circuit_breaker_state"].samples
        if s.labels["backend"] == "primary" and s.labels["state"] == "open"
    ]
    assert [s.value for s in opened] == [1.0]
