"""Sidecar injection as a pure function (``llmroute_operator.webhooks.inject``): the opt-in/opt-out
matrix, the native-sidecar shape, idempotency and the refusals."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from llmroute_operator.settings import SidecarTemplate
from llmroute_operator.webhooks import inject as i

CONFIG = i.InjectionConfig(
    template=SidecarTemplate(image="example/sidecar:1", token_expiration_seconds=1800),
    operator_address="127.0.0.1:14100",
    version="9.9.9",
)
ENABLED = {i.NAMESPACE_LABEL: "enabled"}


def _pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "annotations": annotations or {}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox"}]},
    }
    body["spec"].update(spec)
    return body


def _injected(pod: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    plan = i.plan(pod, namespace_labels=labels if labels is not None else ENABLED, config=CONFIG)
    assert plan.action == "inject", plan
    return i.apply_merge_patch(pod, plan.patch)


@pytest.mark.parametrize(
    ("annotation", "labels", "action"),
    [
        (None, {}, "skip"),
        (None, ENABLED, "inject"),
        (None, {i.NAMESPACE_LABEL: "disabled"}, "skip"),
        ("true", {}, "inject"),
        ("true", ENABLED, "inject"),
        ("false", ENABLED, "skip"),
        ("false", {}, "skip"),
        ("TRUE", {}, "inject"),
        ("maybe", ENABLED, "inject"),
    ],
)
def test_opt_in_matrix(annotation: str | None, labels: dict[str, str], action: str) -> None:
    pod = _pod({i.ANNOTATION_INJECT: annotation} if annotation is not None else None)
    plan = i.plan(pod, namespace_labels=labels, config=CONFIG)
    assert plan.action == action
    if action == "skip":
        assert plan.patch == {}  # untouched


def test_native_sidecar_shape() -> None:
    pod = _injected(_pod())
    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["name"] == i.SIDECAR_NAME
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "example/sidecar:1"
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["LLMROUTE_OPERATOR"]["value"] == "127.0.0.1:14100"
    assert env["LLMROUTE_TOKEN_FILE"]["value"] == i.TOKEN_FILE
    assert env["LLMROUTE_CA_FILE"]["value"] == i.CA_FILE
    security = sidecar["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert sidecar["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 14090}
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts[i.TOKEN_VOLUME]["readOnly"] is True and mounts[i.CA_VOLUME]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    token = volumes[i.TOKEN_VOLUME]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "llmroute", "expirationSeconds": 1800, "path": "token"}
    assert volumes[i.CA_VOLUME]["configMap"]["name"] == i.CA_CONFIGMAP
    assert pod["metadata"]["annotations"][i.ANNOTATION_INJECTED] == "9.9.9"
    assert pod["metadata"]["labels"][i.SIDECAR_LABEL] == "injected"


def test_sidecar_goes_first_among_init_containers() -> None:
    pod = _injected(_pod(initContainers=[{"name": "migrate", "image": "x"}]))
    assert [c["name"] for c in pod["spec"]["initContainers"]] == [i.SIDECAR_NAME, "migrate"]
    assert "env" not in pod["spec"]["initContainers"][1]


def test_openai_base_url_for_every_app_container_but_not_over_their_own() -> None:
    pod = _pod()
    pod["spec"]["containers"] = [
        {"name": "app", "image": "a", "env": [{"name": "X", "value": "1"}]},
        {"name": "worker", "image": "w", "env": [{"name": "OPENAI_BASE_URL", "value": "http://mine"}]},
    ]
    plan = i.plan(pod, namespace_labels=ENABLED, config=CONFIG)
    result = i.apply_merge_patch(pod, plan.patch)
    app, worker = result["spec"]["containers"]
    assert app["env"] == [
        {"name": "X", "value": "1"},
        {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:14080/v1"},
    ]
    assert worker["env"] == [{"name": "OPENAI_BASE_URL", "value": "http://mine"}]
    assert result["metadata"]["annotations"][i.ANNOTATION_BASE_URL_KEPT] == "worker"
    assert any("worker" in w for w in plan.warnings)


def test_injection_is_idempotent() -> None:
    once = _injected(_pod())
    again = i.plan(once, namespace_labels=ENABLED, config=CONFIG)
    assert again.action == "present"
    assert again.patch == {}


def test_copied_pod_without_annotation_is_completed_not_doubled() -> None:
    once = _injected(_pod())
    copied = copy.deepcopy(once)
    del copied["metadata"]["annotations"][i.ANNOTATION_INJECTED]
    copied["spec"]["volumes"] = [v for v in copied["spec"]["volumes"] if v["name"] != i.CA_VOLUME]
    plan = i.plan(copied, namespace_labels=ENABLED, config=CONFIG)
    assert plan.action == "present"
    result = i.apply_merge_patch(copied, plan.patch)
    assert [c["name"] for c in result["spec"]["initContainers"]] == [i.SIDECAR_NAME]
    assert sorted(v["name"] for v in result["spec"]["volumes"]) == [i.CA_VOLUME, i.TOKEN_VOLUME]
    assert result["metadata"]["annotations"][i.ANNOTATION_INJECTED] == "9.9.9"


def test_annotation_alone_does_not_stop_injection() -> None:
    pod = _pod({i.ANNOTATION_INJECTED: "0.0.1"})
    plan = i.plan(pod, namespace_labels=ENABLED, config=CONFIG)
    assert plan.action == "inject"
    # The version annotation is already there; only the label the operator watches pods by is added.
    assert plan.patch["metadata"] == {"labels": {i.SIDECAR_LABEL: "injected"}}


def test_port_collision_is_refused_with_the_container_and_port() -> None:
    pod = _pod()
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}, {"containerPort": 14080}]
    with pytest.raises(i.InjectionRefused) as refused:
        i.plan(pod, namespace_labels=ENABLED, config=CONFIG)
    message = str(refused.value)
    assert 'spec.containers[0].ports[1]: container "app" declares port 14080' in message
    assert 'llmroute.io/inject: "false"' in message


@pytest.mark.parametrize("port", [14081, 14090])
def test_other_reserved_ports(port: int) -> None:
    pod = _pod(initContainers=[{"name": "init", "image": "x", "ports": [{"containerPort": port}]}])
    with pytest.raises(i.InjectionRefused, match=f"declares port {port}"):
        i.plan(pod, namespace_labels=ENABLED, config=CONFIG)


def test_port_collision_in_an_opted_out_pod_is_fine() -> None:
    pod = _pod({i.ANNOTATION_INJECT: "false"})
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 14080}]
    assert i.plan(pod, namespace_labels=ENABLED, config=CONFIG).action == "skip"


def test_foreign_container_with_the_sidecar_name_is_refused() -> None:
    pod = _pod(initContainers=[{"name": i.SIDECAR_NAME, "image": "someone/else", "restartPolicy": "Always"}])
    with pytest.raises(i.InjectionRefused, match="already has a container named"):
        i.plan(pod, namespace_labels=ENABLED, config=CONFIG)


def test_foreign_volume_with_the_sidecar_name_is_refused() -> None:
    pod = _pod(volumes=[{"name": i.TOKEN_VOLUME, "emptyDir": {}}])
    with pytest.raises(i.InjectionRefused, match="volume named"):
        i.plan(pod, namespace_labels=ENABLED, config=CONFIG)


def test_host_network_pod_opted_in_by_namespace_is_skipped_and_told_why() -> None:
    plan = i.plan(_pod(hostNetwork=True), namespace_labels=ENABLED, config=CONFIG)
    assert plan.action == "skip"
    assert "hostNetwork" in plan.patch["metadata"]["annotations"][i.ANNOTATION_SKIPPED]
    assert plan.warnings


def test_host_network_pod_asking_by_annotation_is_refused() -> None:
    with pytest.raises(i.InjectionRefused, match=r"spec\.hostNetwork"):
        i.plan(_pod({i.ANNOTATION_INJECT: "true"}, hostNetwork=True), namespace_labels={}, config=CONFIG)


def test_pod_without_service_account_gets_default() -> None:
    pod = _pod()
    del pod["spec"]["serviceAccountName"]
    assert _injected(pod)["spec"]["serviceAccountName"] == "default"
    assert "serviceAccountName" not in i.plan(_pod(), namespace_labels=ENABLED, config=CONFIG).patch["spec"]


def test_without_a_ca_no_ca_volume() -> None:
    config = i.InjectionConfig(template=CONFIG.template, operator_address="op:14100", with_ca=False)
    plan = i.plan(_pod(), namespace_labels=ENABLED, config=config)
    pod = i.apply_merge_patch(_pod(), plan.patch)
    assert [v["name"] for v in pod["spec"]["volumes"]] == [i.TOKEN_VOLUME]
    assert "LLMROUTE_CA_FILE" not in {e["name"] for e in pod["spec"]["initContainers"][0]["env"]}


def test_merge_patch_replaces_lists_and_merges_maps() -> None:
    target = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert i.apply_merge_patch(target, {"a": {"c": [3]}, "d": None}) == {"a": {"b": 1, "c": [3]}}
    assert target == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_shared_redis_is_passed_to_the_sidecar_only_when_configured() -> None:
    env = {e["name"]: e for e in i.sidecar_container(CONFIG)["env"]}
    assert "LLMROUTE_REDIS_URL" not in env
    shared = dataclasses.replace(
        CONFIG, template=dataclasses.replace(CONFIG.template, redis_url="redis://redis.shared:6379/0")
    )
    env = {e["name"]: e for e in i.sidecar_container(shared)["env"]}
    assert env["LLMROUTE_REDIS_URL"]["value"] == "redis://redis.shared:6379/0"


def test_an_otlp_endpoint_is_passed_to_the_sidecar_only_when_configured() -> None:
    env = {e["name"]: e for e in i.sidecar_container(CONFIG)["env"]}
    assert "LLMROUTE_OTLP_ENDPOINT" not in env
    traced = dataclasses.replace(
        CONFIG, template=dataclasses.replace(CONFIG.template, otlp_endpoint="http://otel-collector.obs:4317")
    )
    env = {e["name"]: e for e in i.sidecar_container(traced)["env"]}
    assert env["LLMROUTE_OTLP_ENDPOINT"]["value"] == "http://otel-collector.obs:4317"
