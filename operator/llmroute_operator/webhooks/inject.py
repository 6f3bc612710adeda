"""Sidecar injection: what the mutating webhook does to a Pod on CREATE. Pure code.

:func:`plan` looks at a Pod (as the API server sends it: defaulted, not yet stored) and the labels of
its namespace, and returns a :class:`Plan`: skip it (not opted in, opted out, already injected), or a
merge patch that adds the sidecar; it raises :class:`InjectionRefused` when the pod cannot take a
sidecar. ``webhooks/pods.py`` turns the plan into the admission response.

Opt-in and opt-out (design.md): the pod annotation ``llmroute.io/inject`` wins when set (``"true"`` or
``"false"``); otherwise the namespace label ``llmroute.io/injection=enabled`` decides.

What an injected pod gets:

- the sidecar as a *native sidecar*: the first init container, with ``restartPolicy: Always``, so it
  starts before the app containers and stops after them; requests/limits from the operator settings,
  a read-only root filesystem, non-root user, no privilege escalation, all capabilities dropped; a
  startup probe on the admin ``/healthz`` (the app starts once the sidecar listens) and a readiness
  probe on ``/readyz`` (ready once it holds a config);
- a projected ServiceAccount token (audience ``llmroute``, expiry from the settings) mounted read-only,
  which the sidecar presents to the config server (a pod that names no ServiceAccount gets
  ``default``, as the ServiceAccount admission plugin would have set before the webhook ran);
- the operator's CA from the ConfigMap ``llmroute-ca`` that the webhook keeps in the pod's namespace
  (ConfigMap rather than Secret: a CA certificate is public, and the kubelet refreshes a ConfigMap
  volume when the CA rotates);
- env: ``POD_NAME``/``POD_NAMESPACE``/``NODE_NAME`` (downward API), ``LLMROUTE_OPERATOR``,
  ``LLMROUTE_TOKEN_FILE``, ``LLMROUTE_CA_FILE``;
- ``OPENAI_BASE_URL=http://127.0.0.1:14080/v1`` in every app container that does not set it in its
  own ``env`` (one that does keeps its value; the annotation ``llmroute.io/openai-base-url-kept`` lists
  those containers); an explicit ``env`` entry wins over ``envFrom``, so a value an app gets from a
  ConfigMap via ``envFrom`` is overridden — set it in ``env`` to keep it;
- the annotation ``llmroute.io/injected: <version>``.

Idempotency is judged on content, not on the annotation alone: a pod that already carries the sidecar
(the same image and env) is left as it is apart from completing what is missing, so creating a pod from
the YAML of an injected one never injects twice; a container that only *shares the name* is refused.

Refused, with a message naming the container and field: an app container that declares one of the
sidecar's ports (14080, 14081, 14090), a foreign container or volume that uses the sidecar's names, and
a ``hostNetwork`` pod that asked for injection by annotation. A ``hostNetwork`` pod opted in only by its
namespace label is skipped instead (and told why in the ``llmroute.io/injection-skipped`` annotation and
an admission warning): in the node's network namespace, ``127.0.0.1:14080`` would be shared by every
such pod on the node, and one pod's app could spend another's budget, so refusing every such pod of
a labelled namespace (node agents, say) would do more harm than leaving them alone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llmroute_operator.settings import SidecarTemplate

__all__ = [
    "ANNOTATION_INJECT",
    "ANNOTATION_INJECTED",
    "CA_CONFIGMAP",
    "NAMESPACE_LABEL",
    "SIDECAR_LABEL",
    "SIDECAR_NAME",
    "InjectionConfig",
    "InjectionRefused",
    "Plan",
    "apply_merge_patch",
    "plan",
    "sidecar_container",
]

ANNOTATION_INJECT = "llmroute.io/inject"
ANNOTATION_INJECTED = "llmroute.io/injected"
ANNOTATION_SKIPPED = "llmroute.io/injection-skipped"
ANNOTATION_BASE_URL_KEPT = "llmroute.io/openai-base-url-kept"
NAMESPACE_LABEL = "llmroute.io/injection"
#: Set on every injected pod, so the operator can watch exactly those pods (a label selector; an
#: annotation cannot be selected) and push a new config when their labels change.
SIDECAR_LABEL = "llmroute.io/sidecar"

SIDECAR_NAME = "llmroute-sidecar"
TOKEN_VOLUME = "llmroute-token"
CA_VOLUME = "llmroute-ca"
CA_CONFIGMAP = "llmroute-ca"
CA_KEY = "ca.crt"
TOKEN_DIR = "/var/run/secrets/llmroute"
TOKEN_FILE = f"{TOKEN_DIR}/token"
CA_DIR = "/var/run/llmroute/ca"
CA_FILE = f"{CA_DIR}/{CA_KEY}"
BASE_URL_ENV = "OPENAI_BASE_URL"
SIDECAR_USER = 65532


class InjectionRefused(Exception):
    """The pod asked for a sidecar but cannot take one; the message says why and what to change."""


@dataclass(frozen=True)
class InjectionConfig:
    """What the operator injects (from its settings) and where sidecars find it."""

    template: SidecarTemplate = field(default_factory=SidecarTemplate)
    operator_address: str = "llmroute-operator.llmroute-system.svc:14100"
    version: str = "dev"
    with_ca: bool = True  # mount the llmroute-ca ConfigMap (False: the config server has a public cert)


@dataclass(frozen=True)
class Plan:
    """What to do with a pod: ``inject`` (apply ``patch``), or leave it (``skip``/``present``)."""

    action: Literal["inject", "skip", "present"]
    reason: str
    patch: dict[str, Any] = field(default_factory=dict)  # a JSON merge patch; lists are replaced whole
    warnings: tuple[str, ...] = ()


def _opted_in(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> tuple[bool, bool, str]:
    """``(wanted, by_annotation, why)``."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    value = str(annotations.get(ANNOTATION_INJECT, "")).strip().lower()
    if value == "true":
        return True, True, f'annotation {ANNOTATION_INJECT}: "true"'
    if value == "false":
        return False, True, f'annotation {ANNOTATION_INJECT}: "false"'
    if namespace_labels.get(NAMESPACE_LABEL) == "enabled":
        return True, False, f"namespace label {NAMESPACE_LABEL}=enabled"
    return False, False, "not opted in"


def sidecar_container(config: InjectionConfig) -> dict[str, Any]:
    """The sidecar as a native sidecar (an init container with ``restartPolicy: Always``)."""
    t = config.template

    def field_env(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}

    env: list[dict[str, Any]] = [
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("NODE_NAME", "spec.nodeName"),
        {"name": "LLMROUTE_OPERATOR", "value": config.operator_address},
        {"name": "LLMROUTE_TOKEN_FILE", "value": TOKEN_FILE},
    ]
    mounts: list[dict[str, Any]] = [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}]
    if config.with_ca:
        env.append({"name": "LLMROUTE_CA_FILE", "value": CA_FILE})
        mounts.append({"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True})
    env += [
        {"name": "LLMROUTE_HTTP_ADDR", "value": f"127.0.0.1:{t.http_port}"},
        {"name": "LLMROUTE_GRPC_ADDR", "value": f"127.0.0.1:{t.grpc_port}"},
        {"name": "LLMROUTE_ADMIN_ADDR", "value": f":{t.admin_port}"},
    ]
    if t.redis_url:
        env.append({"name": "LLMROUTE_REDIS_URL", "value": t.redis_url})
    if t.otlp_endpoint:
        env.append({"name": "LLMROUTE_OTLP_ENDPOINT", "value": t.otlp_endpoint})

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": t.admin_port},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 1,
        }

    return {
        "name": SIDECAR_NAME,
        "image": t.image,
        "imagePullPolicy": t.image_pull_policy,
        "restartPolicy": "Always",
        "env": env,
        "ports": [{"name": "llmroute-admin", "containerPort": t.admin_port, "protocol": "TCP"}],
        "startupProbe": probe("/healthz", 1, 60),
        "readinessProbe": probe("/readyz", 2, 3),
        "resources": {
            "requests": {"cpu": t.cpu_request, "memory": t.memory_request},
            "limits": {"cpu": t.cpu_limit, "memory": t.memory_limit},
        },
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": SIDECAR_USER,
            "runAsGroup": SIDECAR_USER,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }


def _volumes(config: InjectionConfig) -> list[dict[str, Any]]:
    t = config.template
    volumes: list[dict[str, Any]] = [
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "defaultMode": 0o444,
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": t.token_audience,
                            "expirationSeconds": t.token_expiration_seconds,
                            "path": "token",
                        }
                    }
                ],
            },
        }
    ]
    if config.with_ca:
        volumes.append(
            {
                "name": CA_VOLUME,
                "configMap": {"name": CA_CONFIGMAP, "items": [{"key": CA_KEY, "path": CA_KEY}]},
            }
        )
    return volumes


def _env_essence(container: Mapping[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (str(e.get("name")), repr(e.get("value", e.get("valueFrom")))) for e in container.get("env") or []
    )


def _same_sidecar(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """The content that matters: image, env and how it runs (API-server defaults are ignored)."""
    return (
        existing.get("image") == wanted.get("image")
        and existing.get("restartPolicy") == wanted.get("restartPolicy")
        and _env_essence(existing) == _env_essence(wanted)
    )


def _port_collisions(spec: Mapping[str, Any], template: SidecarTemplate) -> list[str]:
    reserved = {
        template.http_port: "its OpenAI-compatible HTTP API",
        template.grpc_port: "its gRPC API",
        template.admin_port: "its admin endpoint (metrics, health)",
    }
    found = []
    for kind in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(kind) or []):
            if container.get("name") == SIDECAR_NAME:
                continue
            for j, port in enumerate(container.get("ports") or []):
                number = port.get("containerPort")
                if number in reserved:
                    found.append(
                        f'spec.{kind}[{i}].ports[{j}]: container "{container.get("name")}" declares port '
                        f"{number}, which the llmroute sidecar needs for {reserved[number]}"
                    )
    return found


def plan(
    pod: Mapping[str, Any],
    *,
    namespace_labels: Mapping[str, str],
    config: InjectionConfig,
) -> Plan:
    """Decide what to do with ``pod``; raises :class:`InjectionRefused` for malformed pods."""
    wanted, by_annotation, why = _opted_in(pod, namespace_labels)
    if not wanted:
        return Plan("skip", why)
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    annotations = dict(meta.get("annotations") or {})
    if spec.get("hostNetwork"):
        message = (
            "hostNetwork pods share the node's loopback, so the sidecar's 127.0.0.1 ports would be shared "
            "by every such pod on the node"
        )
        if by_annotation:
            raise InjectionRefused(
                f"spec.hostNetwork: the pod asks for the llmroute sidecar ({why}), but {message}; "
                f'remove hostNetwork or set {ANNOTATION_INJECT}: "false"'
            )
        return Plan(
            "skip",
            "hostNetwork",
            patch={"metadata": {"annotations": {ANNOTATION_SKIPPED: f"hostNetwork: {message}"}}},
            warnings=(f"llmroute sidecar not injected: {message}",),
        )
    sidecar = sidecar_container(config)
    init = [dict(c) for c in spec.get("initContainers") or []]
    containers = [dict(c) for c in spec.get("containers") or []]
    existing = next((c for c in [*init, *containers] if c.get("name") == SIDECAR_NAME), None)
    if existing is not None and not (_same_sidecar(existing, sidecar) or ANNOTATION_INJECTED in annotations):
        raise InjectionRefused(
            f'the pod already has a container named "{SIDECAR_NAME}" that is not the llmroute sidecar '
            f'(image {existing.get("image")!r}); rename it, or opt out with {ANNOTATION_INJECT}: "false"'
        )
    collisions = _port_collisions(spec, config.template)
    if collisions:
        raise InjectionRefused(
            "; ".join(collisions)
            + f'; change the port, or opt the pod out with the annotation {ANNOTATION_INJECT}: "false"'
        )
    volumes = [dict(v) for v in spec.get("volumes") or []]
    wanted_volumes = _volumes(config)
    have = {v.get("name"): v for v in volumes}
    for volume in wanted_volumes:
        mine = have.get(volume["name"])
        if mine is not None and existing is None:
            raise InjectionRefused(
                f'spec.volumes: the pod already has a volume named "{volume["name"]}", which the llmroute '
                "sidecar needs; rename it"
            )
    spec_patch: dict[str, Any] = {}
    if not spec.get("serviceAccountName") and not spec.get("serviceAccount"):
        # A projected token needs a named ServiceAccount. The ServiceAccount admission plugin names
        # "default" before webhooks run; where it is disabled (test control planes), do it here.
        spec_patch["serviceAccountName"] = "default"
    missing_volumes = [v for v in wanted_volumes if v["name"] not in have]
    if missing_volumes:
        spec_patch["volumes"] = volumes + missing_volumes
    if existing is None:
        spec_patch["initContainers"] = [sidecar, *init]
    kept: list[str] = []
    new_containers = []
    base_url = f"http://127.0.0.1:{config.template.http_port}/v1"
    for container in containers:
        env = list(container.get("env") or [])
        own = next((e for e in env if e.get("name") == BASE_URL_ENV), None)
        if own is not None:
            if own != {"name": BASE_URL_ENV, "value": base_url}:
                kept.append(str(container.get("name")))
            new_containers.append(container)
            continue
        new_containers.append({**container, "env": [*env, {"name": BASE_URL_ENV, "value": base_url}]})
    if new_containers != containers:
        spec_patch["containers"] = new_containers
    annotations_patch: dict[str, Any] = {}
    if ANNOTATION_INJECTED not in annotations:
        annotations_patch[ANNOTATION_INJECTED] = config.version
    if kept and annotations.get(ANNOTATION_BASE_URL_KEPT) != ",".join(kept):
        annotations_patch[ANNOTATION_BASE_URL_KEPT] = ",".join(kept)
    labels = meta.get("labels") or {}
    patch: dict[str, Any] = {}
    if spec_patch:
        patch["spec"] = spec_patch
    metadata_patch: dict[str, Any] = {}
    if annotations_patch:
        metadata_patch["annotations"] = annotations_patch
    if labels.get(SIDECAR_LABEL) != "injected":
        metadata_patch["labels"] = {SIDECAR_LABEL: "injected"}
    if metadata_patch:
        patch["metadata"] = metadata_patch
    if existing is not None:
        return Plan("present", "the sidecar is already there", patch=patch)
    warnings = tuple(f'container "{name}" sets {BASE_URL_ENV} itself; it was left as it is' for name in kept)
    return Plan("inject", why, patch=patch, warnings=warnings)


def apply_merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch (what the webhook's patch means), for tests and dry runs."""
    out: dict[str, Any] = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = apply_merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
