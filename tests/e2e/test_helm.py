"""The Helm chart ``helm/llmroute``: it lints, renders in both TLS modes, and the API server accepts
every object it renders (``kubectl apply --dry-run=server``), CRDs applied first.

helm comes from the test control plane's binaries (``make controlplane`` builds it). When it is missing
the tests skip, unless ``LLMROUTE_E2E=require``, where they fail.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmroute_operator.devcluster import binaries
from llmroute_operator.devcluster.kubectl import Kubectl

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "llmroute"
RELEASE = "llmroute"
RELEASE_NAMESPACE = "llmroute-system"


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        found = binaries.find(with_helm=True)
    except binaries.BinaryNotFoundError as exc:
        if os.environ.get("LLMROUTE_E2E") == "require":
            pytest.fail(f"LLMROUTE_E2E=require, but helm is not built: {exc}", pytrace=False)
        pytest.skip(f"helm is not built ({exc}); run `make controlplane`")
    if found.helm is None:
        if os.environ.get("LLMROUTE_E2E") == "require":
            pytest.fail("LLMROUTE_E2E=require, but helm is not built", pytrace=False)
        pytest.skip("helm is not built; run `make controlplane`")
    return found.helm.path


def run_helm(helm: Path, *args: str) -> str:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def template(helm: Path, *sets: str, namespace: str = RELEASE_NAMESPACE) -> str:
    flags = [arg for value in sets for arg in ("--set", value)]
    return run_helm(helm, "template", RELEASE, str(CHART), "--namespace", namespace, *flags)


def objects(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def test_chart_crds_are_copies_of_the_repository_crds() -> None:
    repo = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == repo
    for name in repo:
        assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text(), (
            f"helm/llmroute/crds/{name} differs from crds/{name}: copy it again"
        )


def test_lint(helm: Path) -> None:
    run_helm(helm, "lint", str(CHART))
    run_helm(helm, "lint", "--strict", str(CHART))
    run_helm(helm, "lint", "--strict", str(CHART), "--set", "certManager.enabled=true")


def test_default_render_self_signed(helm: Path) -> None:
    docs = objects(template(helm))
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "Service",
        "Secret",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "PodDisruptionBudget",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    } <= kinds
    assert "Certificate" not in kinds and "ServiceMonitor" not in kinds

    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/llmroute/operator:0.1.0"
    command = container["command"]
    assert command[0] == "llmroute-operator"
    for flag in ("--webhook-addr=:14443", "--config-addr=:14100", "--metrics-addr=:14091"):
        assert flag in command
    assert f"--config-host=llmroute-config.{RELEASE_NAMESPACE}.svc:14100" in command
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True

    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert services["llmroute-webhook"]["spec"]["ports"][0]["port"] == 443
    assert services["llmroute-config"]["spec"]["ports"][0]["port"] == 14100
    assert services["llmroute-metrics"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"

    # One CA: the Secret's ca.crt is the caBundle of every webhook.
    secret = one(docs, "Secret", "llmroute-tls")
    ca = secret["data"]["ca.crt"]
    assert base64.b64decode(ca).startswith(b"-----BEGIN CERTIFICATE-----")
    validating = one(docs, "ValidatingWebhookConfiguration")
    mutating = one(docs, "MutatingWebhookConfiguration")
    hooks = validating["webhooks"] + mutating["webhooks"]
    assert {h["clientConfig"]["caBundle"] for h in hooks} == {ca}
    # kopf serves each handler at /<handler id>.
    paths = {h["name"]: h["clientConfig"]["service"]["path"] for h in hooks}
    assert paths == {
        "validate-llmroute.llmroute.io": "/validate-llmroute",
        "validate-llmbudget.llmroute.io": "/validate-llmbudget",
        "inject-sidecar.llmroute.io": "/inject-sidecar",
    }
    assert {h["failurePolicy"] for h in validating["webhooks"]} == {"Fail"}
    (inject,) = mutating["webhooks"]
    assert inject["failurePolicy"] == "Ignore" and inject["reinvocationPolicy"] == "Never"
    excluded = inject["namespaceSelector"]["matchExpressions"][0]
    assert excluded["operator"] == "NotIn" and {RELEASE_NAMESPACE, "kube-system"} <= set(excluded["values"])


def test_every_replica_serves_so_drains_and_rollouts_keep_one(helm: Path) -> None:
    docs = objects(template(helm))
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert "--leader-lease=llmroute-operator" in command
    assert "--advertise-address=$(POD_IP):14100" in command
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert env["POD_IP"] == "status.podIP" and env["POD_SERVICE_ACCOUNT"] == "spec.serviceAccountName"
    (token,) = [v for v in pod["volumes"] if v["name"] == "peer-token"]
    (source,) = token["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "llmroute"
    assert "--peer-token-file=/var/run/secrets/llmroute/token" in command
    role = one(docs, "Role", "llmroute-operator-leader")
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    binding = one(docs, "RoleBinding", "llmroute-operator-leader")
    assert binding["roleRef"]["name"] == "llmroute-operator-leader"
    cluster_role = one(docs, "ClusterRole")
    assert all("kopf.dev" not in rule["apiGroups"] for rule in cluster_role["rules"])


def test_cert_manager_render(helm: Path) -> None:
    docs = objects(template(helm, "certManager.enabled=true", "serviceMonitor.enabled=true"))
    assert not [d for d in docs if d["kind"] == "Secret"]
    certificate = one(docs, "Certificate", "llmroute-serving")
    assert certificate["spec"]["secretName"] == "llmroute-tls"
    assert f"llmroute-config.{RELEASE_NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert f"llmroute-webhook.{RELEASE_NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert len([d for d in docs if d["kind"] == "Issuer"]) == 2
    one(docs, "ServiceMonitor")
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = one(docs, kind)
        annotation = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        assert annotation == f"{RELEASE_NAMESPACE}/llmroute-serving"
        assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])


def test_server_side_dry_run(helm: Path, kubectl: Kubectl, namespace: str) -> None:
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for sets in ((), ("watchNamespaces={" + namespace + "}", "webhooks.injection.namespaces=labelled")):
        rendered = template(helm, *sets, namespace=namespace)
        result = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered)
        applied = [line for line in result.stdout.splitlines() if line.strip()]
        assert len(applied) == len(objects(rendered)), result.stdout
        assert all(line.endswith("(server dry run)") for line in applied), result.stdout
        for expected in (
            "deployment.apps/llmroute-operator",
            "service/llmroute-config",
            "secret/llmroute-tls",
            "validatingwebhookconfiguration.admissionregistration.k8s.io/",
            "mutatingwebhookconfiguration.admissionregistration.k8s.io/",
            "clusterrole.rbac.authorization.k8s.io/",
            "poddisruptionbudget.policy/llmroute-operator",
        ):
            assert expected in result.stdout, result.stdout


def test_upgrade_keeps_the_generated_ca(helm: Path, kubectl: Kubectl, namespace: str) -> None:
    """``helm upgrade`` reuses the Secret (``lookup``) instead of issuing a new CA that sidecars and the
    webhook configurations do not trust yet. Webhooks are off: this release must not admit anything
    for the other tests sharing the cluster (no controller-manager runs the pods anyway)."""
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    common = [
        "--namespace",
        namespace,
        "--kubeconfig",
        str(kubectl.kubeconfig),
        "--set",
        "webhooks.validation.enabled=false",
        "--set",
        "webhooks.injection.enabled=false",
        "--set",
        "rbac.create=false",
    ]
    release = f"llmroute-{namespace}"[:40]
    try:
        run_helm(helm, "install", release, str(CHART), "--skip-crds", *common)
        first = kubectl.json("get", "secret", "-n", namespace, f"{release}-tls")["data"]
        run_helm(helm, "upgrade", release, str(CHART), "--skip-crds", *common, "--set", "logLevel=debug")
        second = kubectl.json("get", "secret", "-n", namespace, f"{release}-tls")["data"]
        assert second == first
    finally:
        run_helm(
            helm, "uninstall", release, "--namespace", namespace, "--kubeconfig", str(kubectl.kubeconfig)
        )
