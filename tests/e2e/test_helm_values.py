"""The chart's values contract: ``values.schema.json`` and the optional NetworkPolicy.

The schema covers every key of ``values.yaml`` (checked by walking both), accepts the defaults and the
documented alternatives, and makes ``helm template`` refuse bad values with an error that names the field.
The NetworkPolicy renders only when ``networkPolicy.enabled``, selects exactly the operator pods, opens
exactly the Deployment's three ports, and the real API server accepts it (server-side dry run).

helm comes from the test control plane's binaries, as in ``test_helm.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmroute_operator.devcluster import binaries
from llmroute_operator.devcluster.kubectl import Kubectl

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "llmroute"
SCHEMA = CHART / "values.schema.json"
RELEASE = "llmroute"
RELEASE_NAMESPACE = "llmroute-system"
OPTIONAL_FEATURES = (
    "networkPolicy.enabled=true",
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
)


@pytest.fixture(scope="module")
def helm() -> Path:
    required = os.environ.get("LLMROUTE_E2E") == "require"
    try:
        found = binaries.find(with_helm=True)
    except binaries.BinaryNotFoundError as exc:
        if required:
            pytest.fail(f"LLMROUTE_E2E=require, but helm is not built: {exc}", pytrace=False)
        pytest.skip(f"helm is not built ({exc}); run `make controlplane`")
    if found.helm is None:
        if required:
            pytest.fail("LLMROUTE_E2E=require, but helm is not built", pytrace=False)
        pytest.skip("helm is not built; run `make controlplane`")
    return found.helm.path


def helm_run(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60, check=False)


def ok(helm: Path, *args: str) -> str:
    result = helm_run(helm, *args)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def set_flags(sets: tuple[str, ...]) -> list[str]:
    return [arg for value in sets for arg in ("--set", value)]


def template(helm: Path, *sets: str, namespace: str = RELEASE_NAMESPACE, extra: tuple[str, ...] = ()) -> str:
    return ok(helm, "template", RELEASE, str(CHART), "--namespace", namespace, *set_flags(sets), *extra)


def objects(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def network_policies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


# -- the schema covers values.yaml --------------------------------------------------------------------


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` followed (the referring node's own keys win, e.g. description)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(schema, target), **{k: v for k, v in node.items() if k != "$ref"}}


def _walk(values: dict[str, Any], node: dict[str, Any], schema: dict[str, Any], path: str) -> Iterator[str]:
    """Paths of values.yaml keys the schema does not describe (or describes without a description)."""
    node = _resolve(schema, node)
    properties = node.get("properties") or {}
    free_form = "properties" not in node or isinstance(node.get("additionalProperties"), dict)
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in properties:
            if not free_form:
                yield f"{where}: not in the schema"
            continue
        child = _resolve(schema, properties[key])
        if not child.get("description"):
            yield f"{where}: no description"
        if isinstance(value, dict) and "properties" in child:
            yield from _walk(value, child, schema, where)


def test_schema_describes_every_value() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert list(_walk(values, schema, schema, "")) == []
    # Every chart object refuses unknown keys; free-form maps (labels, resources, ...) do not.
    for key in ("image", "sidecar", "ports", "service", "serviceMonitor", "tls", "certManager", "webhooks"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    for key in ("networkPolicy", "prometheusRule", "grafanaDashboard", "podDisruptionBudget", "rbac"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    for key in ("resources", "affinity", "podSecurityContext", "securityContext", "nodeSelector"):
        assert _resolve(schema, schema["properties"][key]).get("additionalProperties") is not False, key


# -- lint ---------------------------------------------------------------------------------------------


def test_lint_strict_with_defaults_and_optional_features(helm: Path) -> None:
    ok(helm, "lint", "--strict", str(CHART))
    ok(helm, "lint", "--strict", str(CHART), *set_flags(OPTIONAL_FEATURES))
    ok(
        helm,
        "lint",
        "--strict",
        str(CHART),
        *set_flags((*OPTIONAL_FEATURES, "certManager.enabled=true", "serviceMonitor.enabled=true")),
    )


# -- bad values fail, naming the field ----------------------------------------------------------------

BAD_VALUES = [
    # (flags, the field path helm's error names, what it says about it)
    (("--set", "replicaCount=two"), "at '/replicaCount'", "want integer"),
    (("--set", "replicaCount=0"), "at '/replicaCount'", "minimum"),
    (("--set", "replicas=3"), "at ''", "additional properties 'replicas' not allowed"),
    (("--set", "image.registry=ghcr.io"), "at '/image'", "additional properties 'registry' not allowed"),
    (("--set", "webhooks.injection.enabeld=false"), "at '/webhooks/injection'", "'enabeld' not allowed"),
    (("--set", "image.pullPolicy=Sometimes"), "at '/image/pullPolicy'", "must be one of"),
    (("--set", "ports.webhook=70000"), "at '/ports/webhook'", "maximum"),
    (("--set", "ports.config=0"), "at '/ports/config'", "minimum"),
    (("--set", "serviceMonitor.interval=30sec"), "at '/serviceMonitor/interval'", "does not match pattern"),
    (("--set", "certManager.duration=90d"), "at '/certManager/duration'", "does not match pattern"),
    (("--set", "serviceMonitor.labels=release"), "at '/serviceMonitor/labels'", "want object"),
    (("--set-json", 'podLabels=["a"]'), "at '/podLabels'", "want object"),
    (("--set", "podLabels.team=true"), "at '/podLabels/team'", "want string"),
    (("--set", "resources.limits.memory=lots"), "at '/resources/limits/memory'", "does not match pattern"),
    (("--set", "logLevel=verbose"), "at '/logLevel'", "must be one of"),
    (
        ("--set", "webhooks.injection.namespaces=some"),
        "at '/webhooks/injection/namespaces'",
        "must be one of",
    ),
    (
        ("--set", "webhooks.validation.failurePolicy=fail"),
        "at '/webhooks/validation/failurePolicy'",
        "one of",
    ),
    (("--set", "webhooks.timeoutSeconds=60"), "at '/webhooks/timeoutSeconds'", "maximum"),
    (("--set", "service.type=ExternalName"), "at '/service/type'", "must be one of"),
    (("--set", "networkPolicy.enabled=yes"), "at '/networkPolicy/enabled'", "want boolean"),
    (("--set", "sidecar.redisUrl=http://redis:6379"), "at '/sidecar/redisUrl'", "does not match pattern"),
    (("--set", "sidecar.otlpEndpoint=otel:4317"), "at '/sidecar/otlpEndpoint'", "does not match pattern"),
    (("--set", "watchNamespaces={Team_A}"), "at '/watchNamespaces/0'", "does not match pattern"),
    (
        ("--set", "updateStrategy.rollingUpdate.maxUnavailable=all"),
        "at '/updateStrategy/rollingUpdate/maxUnavailable'",
        "'all' does not match pattern",
    ),
]


@pytest.mark.parametrize(
    ("flags", "field", "message"), BAD_VALUES, ids=[" ".join(flags) for flags, _, _ in BAD_VALUES]
)
def test_bad_values_fail_naming_the_field(
    helm: Path, flags: tuple[str, ...], field: str, message: str
) -> None:
    result = helm_run(helm, "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, *flags)
    assert result.returncode != 0, f"helm template {' '.join(flags)} rendered:\n{result.stdout[:500]}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.lstrip().startswith("- at ")]
    assert any(field in line and message in line for line in errors), result.stderr


@pytest.mark.parametrize(
    "sets",
    [
        ("replicaCount=1", "podDisruptionBudget.minAvailable=50%"),
        (
            "podDisruptionBudget.minAvailable=1",
            "podDisruptionBudget.unhealthyPodEvictionPolicy=IfHealthyBudget",
        ),
        ("image.tag=0.2.0-rc.1@sha256:" + "a" * 64, "image.pullPolicy=Always"),
        ("resources.limits.cpu=2", "resources.requests.cpu=0.5", "resources.limits.memory=1Gi"),
        ("serviceMonitor.interval=1m30s", "serviceMonitor.scrapeTimeout=500ms", "certManager.duration=1h30m"),
        ("sidecar.redisUrl=rediss://redis.llmroute-system:6380/0", "watchNamespaces={team-a,team-b}"),
        ("sidecar.otlpEndpoint=http://otel-collector.observability:4317",),
        ("webhooks.injection.namespaces=labelled", "webhooks.injection.objectSelector.matchLabels.app=web"),
        ("updateStrategy.type=Recreate", "service.type=NodePort", "logLevel=debug"),
        ("serviceMonitor.labels.release=kube-prometheus", "grafanaDashboard.namespace=monitoring"),
    ],
)
def test_documented_alternatives_are_accepted(helm: Path, sets: tuple[str, ...]) -> None:
    assert objects(template(helm, *sets))


# -- NetworkPolicy ------------------------------------------------------------------------------------


def test_network_policy_renders_only_when_enabled(helm: Path) -> None:
    assert network_policies(objects(template(helm))) == []
    assert network_policies(objects(template(helm, "networkPolicy.enabled=false"))) == []

    docs = objects(template(helm, "networkPolicy.enabled=true"))
    (policy,) = network_policies(docs)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert policy["metadata"]["name"] == "llmroute-operator"
    assert policy["metadata"]["namespace"] == RELEASE_NAMESPACE
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    assert spec["policyTypes"] == ["Ingress"]

    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    by_port = {rule["ports"][0]["port"]: rule for rule in spec["ingress"]}
    assert sorted(by_port) == sorted(container_ports.values())  # those three ports, nothing else
    assert all(len(rule["ports"]) == 1 and rule["ports"][0]["protocol"] == "TCP" for rule in spec["ingress"])
    operator_pods = {"podSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}
    # Sidecars anywhere, and the other operator replicas (they forward spend calls to the leader).
    assert by_port[container_ports["config"]]["from"] == [operator_pods, {"namespaceSelector": {}}]
    assert "from" not in by_port[container_ports["webhook"]]  # the API server is not a pod
    assert "from" not in by_port[container_ports["metrics"]]


def test_network_policy_follows_ports_and_watched_namespaces(helm: Path) -> None:
    docs = objects(
        template(
            helm,
            "networkPolicy.enabled=true",
            "ports.webhook=9443",
            "ports.config=9100",
            "ports.metrics=9091",
            "watchNamespaces={team-a,team-b}",
            "fullnameOverride=router",
        )
    )
    (policy,) = network_policies(docs)
    assert policy["metadata"]["name"] == "router-operator"
    by_port = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert sorted(by_port) == [9091, 9100, 9443]
    peers, selector = by_port[9100]["from"]
    assert set(peers) == {"podSelector"}  # the operator's replicas, in the release namespace
    assert selector == {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
            ]
        }
    }


def _dry_run(kubectl: Kubectl, namespace: str, rendered: str) -> str:
    result = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered)
    applied = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(applied) == len(objects(rendered)), result.stdout
    assert all(line.endswith("(server dry run)") for line in applied), result.stdout
    return result.stdout


def test_network_policy_server_side_dry_run(helm: Path, kubectl: Kubectl, namespace: str) -> None:
    for sets in (
        ("networkPolicy.enabled=true",),
        ("networkPolicy.enabled=true", f"watchNamespaces={{{namespace}}}"),
    ):
        only = template(
            helm, *sets, namespace=namespace, extra=("--show-only", "templates/networkpolicy.yaml")
        )
        out = _dry_run(kubectl, namespace, only)
        assert "networkpolicy.networking.k8s.io/llmroute-operator" in out, out
        # and beside everything else the chart renders by default
        _dry_run(kubectl, namespace, template(helm, *sets, namespace=namespace))
