"""The operator against a real kube-apiserver: validating webhook, status conditions, injection.

One ``llmroute-operator --dev`` process serves the whole module (started as a subprocess with the
test cluster's kubeconfig, free loopback ports and ``--namespace`` for the module's own namespaces, so
its cluster-wide webhooks leave everything else alone). The last test stops it with SIGTERM and checks
the graceful shutdown; the fixture kills it if anything is left, and the child also dies with pytest
(``PR_SET_PDEATHSIG``). Startup, apply-to-Accepted and shutdown times are printed (run with ``-s``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl

from .operator_process import OperatorProcess, status_of, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FIGURES: dict[str, float] = {}
_wait = wait_for


@dataclass
class Core:
    kubectl: Kubectl
    operator: OperatorProcess
    ca: Path
    routes_ns: str
    inject_ns: str
    plain_ns: str

    @property
    def config_port(self) -> int:
        return self.operator.config_port

    def get(self, path: str) -> tuple[int, str]:
        return self.operator.get(path)

    def apply(self, manifest: dict[str, Any] | str, *, check: bool = True) -> Any:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl.run("apply", "-f", "-", input=text, check=check)

    def status(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return status_of(self.kubectl, plural, namespace, name)

    def condition(self, plural: str, namespace: str, name: str, kind: str) -> dict[str, Any]:
        found = self.status(plural, namespace, name).get("conditions") or []
        return next((c for c in found if c["type"] == kind), {})


def apply_crds(kubectl: Kubectl) -> None:
    kubectl.apply_crds(ROOT / "crds")


@pytest.fixture(scope="module")
def core(cluster: target.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Core]:
    kubectl = cluster.kubectl
    apply_crds(kubectl)
    routes_ns = cluster.create_namespace("core-routes")
    inject_ns = cluster.create_namespace("core-inject")
    plain_ns = cluster.create_namespace("core-plain")
    kubectl.run("label", "namespace", inject_ns, "llmroute.io/injection=enabled")
    workdir = tmp_path_factory.mktemp("operator")
    ca = workdir / "ca.pem"
    args = ["--dev", "--ca-out", str(ca), "--sidecar-image", "example.test/llmroute-sidecar:e2e"]
    for namespace in (routes_ns, inject_ns, plain_ns):
        args += ["--namespace", namespace]
    operator = OperatorProcess(cluster.kubeconfig, workdir / "operator.log", args)
    try:
        operator.start()
        FIGURES["startup_s"] = operator.wait_ready()
        print(f"\noperator ready in {FIGURES['startup_s']:.2f}s")
        yield Core(kubectl, operator, ca, routes_ns, inject_ns, plain_ns)
    finally:
        if operator.stop() not in (0, None):
            print(operator.tail())
        for namespace in (routes_ns, inject_ns, plain_ns):
            cluster.delete_namespace(namespace)


def _secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": data,
    }


def _route(
    namespace: str, name: str, *, secret: str = "openai", key: str = "apiKey", **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "models": [{"name": "chat", "backends": ["gpt4o", "mini"], "minContextWindow": 32000}],
        "backends": [
            {
                "name": "gpt4o",
                "provider": "openai",
                "model": "gpt-4o",
                "credentialsRef": {"name": secret, "key": key},
                "pricing": {"inputPerMillion": 2.5, "outputPerMillion": 10},
                "contextWindow": 128000,
                "tier": "large",
            },
            {
                "name": "mini",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "credentialsRef": {"name": secret, "key": key},
                "pricing": {"inputPerMillion": 0.15, "outputPerMillion": 0.6},
                "contextWindow": 128000,
                "tier": "small",
            },
        ],
    }
    spec.update(extra)
    return {
        "apiVersion": "llmroute.io/v1alpha1",
        "kind": "LLMRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _refused(core: Core, manifest: dict[str, Any]) -> str:
    result = core.apply(manifest, check=False)
    assert result.returncode != 0, f"applied, but should have been refused: {result.stdout}"
    return result.stderr


def test_invalid_resources_are_refused_at_apply(core: Core) -> None:
    ns = core.routes_ns
    core.apply(_secret(ns, "openai", {"apiKey": "sk-test"}))
    core.apply(_secret(ns, "aws-partial", {"awsAccessKeyId": "AKIA"}))

    message = _refused(core, _route(ns, "missing", secret="nope"))
    assert 'denied the request: spec.backends[0].credentialsRef: Secret "nope" not found' in message

    message = _refused(core, _route(ns, "nokey", key="other"))
    assert 'spec.backends[0].credentialsRef: Secret "openai" has no key "other"' in message

    small = _route(ns, "small")
    small["spec"]["backends"][1]["contextWindow"] = 8192
    message = _refused(core, small)
    assert (
        "spec.backends[1].contextWindow: 8192 tokens is below spec.models[0].minContextWindow (32000)"
        in message
    )

    bedrock = _route(ns, "bedrock")
    bedrock["spec"]["backends"][1].update(
        provider="bedrock", model="anthropic.claude-3-haiku", credentialsRef={"name": "aws-partial"}
    )
    message = _refused(core, bedrock)
    assert 'spec.backends[1].credentialsRef: Secret "aws-partial" has no key "awsSecretAccessKey"' in message

    cycle = _route(ns, "cycle")
    cycle["spec"]["models"][0]["backends"] = ["gpt4o", "mini", "gpt4o"]
    message = _refused(core, cycle)
    assert "spec.models[0].backends[2]" in message and "cycle" in message

    core.apply(_route(ns, "budgeted"))
    budget = {
        "apiVersion": "llmroute.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": "dear", "namespace": ns},
        "spec": {
            "scope": {"routes": ["budgeted"]},
            "period": {"type": "monthly"},
            "limits": {"soft": "80", "hard": "100"},
            "onSoftLimit": {"downgradeTo": "gpt4o", "ladder": [{"atPercent": 90, "downgradeTo": "large"}]},
        },
    }
    budget["spec"]["onSoftLimit"] = {"downgradeTo": "large"}
    message = _refused(core, budget)
    assert 'spec.onSoftLimit.downgradeTo: tier "large" replaces nothing' in message
    budget["spec"]["onSoftLimit"] = {
        "downgradeTo": "small",
        "ladder": [{"atPercent": 90, "downgradeTo": "gpt4o"}],
    }
    message = _refused(core, budget)
    assert 'spec.onSoftLimit.ladder[0].downgradeTo: "gpt4o" is not cheaper than the step before' in message


def test_valid_route_becomes_accepted_with_columns(core: Core) -> None:
    ns = core.routes_ns
    core.apply(_secret(ns, "openai", {"apiKey": "sk-test"}))
    started = time.monotonic()
    core.apply(_route(ns, "chat"))

    def accepted() -> bool:
        status = core.status("llmroutes", ns, "chat")
        condition = next((c for c in status.get("conditions") or [] if c["type"] == "Accepted"), {})
        return condition.get("status") == "True" and status.get("observedGeneration") == status["generation"]

    _wait(accepted, what="Accepted=True")
    FIGURES["apply_to_accepted_s"] = time.monotonic() - started
    print(f"\napply -> Accepted: {FIGURES['apply_to_accepted_s'] * 1000:.0f} ms")
    status = core.status("llmroutes", ns, "chat")
    assert status["models"] == "chat" and status["backends"] == "gpt4o,mini"
    assert status["sidecars"] == {"matched": 0, "synced": 0, "rejected": 0, "summary": "0/0"}
    programmed = core.condition("llmroutes", ns, "chat", "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("True", "NoSidecars")
    table = core.kubectl.run("get", "llmroutes", "-n", ns, "chat").stdout
    assert table.split("\n")[0].split()[:5] == ["NAME", "MODELS", "BACKENDS", "SYNCED", "READY"]
    assert table.split("\n")[1].split()[:5] == ["chat", "chat", "gpt4o,mini", "0/0", "True"]

    updated = _route(ns, "chat")
    updated["spec"]["models"].append({"name": "fast", "backends": ["mini"]})
    core.apply(updated)
    _wait(
        lambda: (
            core.status("llmroutes", ns, "chat").get("observedGeneration") == 2
            and core.status("llmroutes", ns, "chat").get("models") == "chat,fast"
        ),
        what="observedGeneration 2",
    )
    accepted_condition = core.condition("llmroutes", ns, "chat", "Accepted")
    assert accepted_condition["observedGeneration"] == 2


def test_secret_deleted_afterwards_turns_accepted_false(core: Core) -> None:
    ns = core.routes_ns
    core.apply(_secret(ns, "rotating", {"apiKey": "sk-1"}))
    core.apply(_route(ns, "fragile", secret="rotating"))
    _wait(
        lambda: core.condition("llmroutes", ns, "fragile", "Accepted").get("status") == "True",
        what="Accepted",
    )
    accepted_at = core.condition("llmroutes", ns, "fragile", "Accepted")["lastTransitionTime"]

    core.kubectl.run("delete", "secret", "rotating", "-n", ns)
    condition = _wait(
        lambda: (c := core.condition("llmroutes", ns, "fragile", "Accepted")).get("status") == "False" and c,
        what="Accepted=False",
    )
    assert condition["reason"] == "SecretNotFound"
    assert condition["message"].startswith('spec.backends[0].credentialsRef: Secret "rotating" not found')
    programmed = core.condition("llmroutes", ns, "fragile", "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "Invalid")
    events = core.kubectl.json(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.kind=LLMRoute,involvedObject.name=fragile",
    )["items"]
    assert any(e["type"] == "Warning" and e["reason"] == "SecretNotFound" for e in events)

    core.apply(_secret(ns, "rotating", {"apiKey": "sk-2"}))
    condition = _wait(
        lambda: (c := core.condition("llmroutes", ns, "fragile", "Accepted")).get("status") == "True" and c,
        what="Accepted=True again",
    )
    assert condition["lastTransitionTime"] >= accepted_at


def test_budget_gets_conditions_and_spend(core: Core) -> None:
    ns = core.routes_ns
    core.apply(_secret(ns, "openai", {"apiKey": "sk-test"}))
    core.apply(_route(ns, "metered"))
    core.apply(
        {
            "apiVersion": "llmroute.io/v1alpha1",
            "kind": "LLMBudget",
            "metadata": {"name": "metered", "namespace": ns},
            "spec": {
                "scope": {"routes": ["metered"]},
                "period": {"type": "daily", "timezone": "Europe/Berlin"},
                "limits": {"soft": "8", "hard": "10"},
                "onSoftLimit": {"downgradeTo": "small"},
            },
        }
    )

    def written() -> dict[str, Any] | None:
        status = core.status("llmbudgets", ns, "metered")
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        if (
            conditions.get("Accepted", {}).get("status") == "True"
            and "spent" in status
            and "Ready" in conditions
        ):
            return status
        return None

    status = _wait(written, what="budget status")
    assert status["state"] == "Normal" and status["remaining"] in ("10", "10.00", "10.000000")
    assert status["observedGeneration"] == 1 and status["resetAt"] > status["periodStart"]


def _pod(
    namespace: str, name: str, *, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "chatbot"}},
        # No controller-manager: no default ServiceAccount and no token controller, so name one and
        # do not ask for the legacy token mount.
        "spec": {
            "serviceAccountName": "app",
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "example.test/app:1"}],
        },
    }
    if annotations:
        body["metadata"]["annotations"] = annotations
    body["spec"].update(spec)
    return body


def test_pods_in_an_opted_in_namespace_are_injected(core: Core) -> None:
    ns = core.inject_ns
    created = core.kubectl.create(_pod(ns, "chatbot"))
    init = created["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["llmroute-sidecar"]
    sidecar = init[0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "example.test/llmroute-sidecar:e2e"
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["LLMROUTE_OPERATOR"]["value"] == f"127.0.0.1:{core.config_port}"
    assert env["LLMROUTE_TOKEN_FILE"]["value"] == "/var/run/secrets/llmroute/token"
    volumes = {v["name"]: v for v in created["spec"]["volumes"]}
    token = volumes["llmroute-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "llmroute" and token["path"] == "token"
    assert {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:14080/v1"} in created["spec"]["containers"][
        0
    ]["env"]
    assert created["metadata"]["annotations"]["llmroute.io/injected"]
    # The CA the sidecar trusts is the one written to --ca-out.
    configmap = core.kubectl.json("get", "configmap", "llmroute-ca", "-n", ns)
    assert configmap["data"]["ca.crt"] == core.ca.read_text()


def test_opted_out_and_not_opted_in_pods_are_untouched(core: Core) -> None:
    opted_out = core.kubectl.create(
        _pod(core.inject_ns, "opted-out", annotations={"llmroute.io/inject": "false"})
    )
    assert "initContainers" not in opted_out["spec"]
    assert "env" not in opted_out["spec"]["containers"][0]
    assert "llmroute.io/injected" not in opted_out["metadata"].get("annotations", {})

    plain = core.kubectl.create(_pod(core.plain_ns, "plain"))
    assert "initContainers" not in plain["spec"] and "volumes" not in plain["spec"]

    asked = core.kubectl.create(_pod(core.plain_ns, "asked", annotations={"llmroute.io/inject": "true"}))
    assert [c["name"] for c in asked["spec"]["initContainers"]] == ["llmroute-sidecar"]


def test_re_creating_an_injected_pod_does_not_inject_twice(core: Core) -> None:
    ns = core.inject_ns
    first = core.kubectl.create(_pod(ns, "twice-a"))
    again = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "twice-b", "namespace": ns, "annotations": first["metadata"]["annotations"]},
        "spec": first["spec"],
    }
    second = core.kubectl.create(again)
    assert [c["name"] for c in second["spec"]["initContainers"]] == ["llmroute-sidecar"]
    assert sorted(v["name"] for v in second["spec"]["volumes"]) == ["llmroute-ca", "llmroute-token"]
    assert [e["name"] for e in second["spec"]["containers"][0]["env"]].count("OPENAI_BASE_URL") == 1
    # The same manifest applied as two pods: each injected once.
    for name in ("same-1", "same-2"):
        pod = core.kubectl.create(_pod(ns, name))
        assert len(pod["spec"]["initContainers"]) == 1


def test_port_collision_is_refused_with_a_clear_message(core: Core) -> None:
    pod = _pod(core.inject_ns, "collides")
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 14080}]
    result = core.kubectl.run("create", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert 'admission webhook "inject-sidecar.llmroute.io" denied the request' in result.stderr
    assert 'spec.containers[0].ports[0]: container "app" declares port 14080' in result.stderr


def test_metrics_are_exposed(core: Core) -> None:
    code, text = core.get("/metrics")
    assert code == 200
    for name in (
        'llmroute_operator_reconciles_total{kind="LLMRoute",result="ok"}',
        'llmroute_operator_status_writes_total{kind="LLMRoute",result="ok"}',
        'llmroute_operator_admissions_total{result="denied",webhook="validate-llmroute"}',
        'llmroute_operator_injections_total{outcome="injected"}',
        "llmroute_operator_sidecars_connected",
        "llmroute_operator_leader 1.0",
    ):
        assert name in text, name


def test_sigterm_stops_gracefully_and_removes_the_webhooks(core: Core) -> None:
    started = time.monotonic()
    code = core.operator.stop()
    FIGURES["shutdown_s"] = time.monotonic() - started
    print(f"\noperator stopped in {FIGURES['shutdown_s']:.2f}s; figures: {FIGURES}")
    assert code == 0, core.operator.tail()
    text = core.operator.log.read_text()
    assert "llmroute-operator stopped" in text
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        config = core.kubectl.json("get", kind, "llmroute.io")
        assert not config.get("webhooks"), config
    # With the webhook gone, pods are created as they are.
    pod = core.kubectl.create(_pod(core.inject_ns, "after-stop"))
    assert "initContainers" not in pod["spec"]
