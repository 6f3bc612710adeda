"""The one place outside kopf that talks to the Kubernetes API.

The config server verifies sidecar tokens (:meth:`KubeClient.token_review`) and reads the Pod a token
is bound to (:meth:`KubeClient.get_pod`); the handlers and the budget service patch status and post
Events; the validating webhook falls back to reading Secrets here when the index does not know them.
kopf keeps its own client for watches and admission; everything else goes through this module, so
tests and the rest of the operator never build API clients themselves.

Credentials: ``KUBECONFIG`` (or ``~/.kube/config``) when present, else the in-cluster ServiceAccount.
``app.py`` owns one :class:`KubeClient` per run and passes it to the parts it starts; the module-level
:func:`token_review` / :func:`get_pod` are conveniences that use one shared client per event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "KubeClient",
    "KubeError",
    "NotFoundError",
    "TokenReviewResult",
    "default_client",
    "get_pod",
    "token_review",
]

log = logging.getLogger(__name__)

GROUP = "llmroute.io"
VERSION = "v1alpha1"
COMPONENT = "llmroute-operator"

_POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
_POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
_SA_PREFIX = "system:serviceaccount:"


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(KubeError, LookupError):
    """The object does not exist (HTTP 404)."""


@dataclass(frozen=True)
class TokenReviewResult:
    """What the API server says about a bearer token (``TokenReview.status``)."""

    authenticated: bool
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    error: str = ""

    @property
    def service_account(self) -> tuple[str, str] | None:
        """``(namespace, name)`` when the token belongs to a ServiceAccount, else ``None``."""
        if not self.authenticated or not self.username.startswith(_SA_PREFIX):
            return None
        namespace, sep, name = self.username[len(_SA_PREFIX) :].partition(":")
        return (namespace, name) if sep and namespace and name else None

    @property
    def namespace(self) -> str | None:
        sa = self.service_account
        return sa[0] if sa else None

    @property
    def pod_name(self) -> str | None:
        """The Pod the token is bound to (projected tokens and ``--bound-object-kind Pod``)."""
        values = self.extra.get(_POD_NAME_EXTRA, ())
        return values[0] if values else None

    @property
    def pod_uid(self) -> str | None:
        values = self.extra.get(_POD_UID_EXTRA, ())
        return values[0] if values else None


def _error(exc: ApiException, what: str) -> KubeError:
    status = int(exc.status or 0)
    message = f"{what}: HTTP {status} {exc.reason or ''}".strip()
    return NotFoundError(message, status=status) if status == 404 else KubeError(message, status=status)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _kubeconfig_path(explicit: str | os.PathLike[str] | None) -> str | None:
    """The kubeconfig to use: explicit, ``$KUBECONFIG`` (first entry), ``~/.kube/config``, or None."""
    if explicit:
        return os.fspath(explicit)
    from_env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if from_env:
        return from_env
    default = os.path.expanduser("~/.kube/config")
    return default if os.path.exists(default) else None


class KubeClient:
    """A lazily-connected Kubernetes API client; close it with :meth:`close` (or ``async with``)."""

    def __init__(
        self, *, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
    ) -> None:
        self._kubeconfig = kubeconfig
        self._context = context
        self._api: k8s.ApiClient | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _client(self) -> k8s.ApiClient:
        if self._api is not None:
            return self._api
        async with self._lock:
            if self._api is None:
                configuration = k8s.Configuration()
                path = _kubeconfig_path(self._kubeconfig)
                if path is not None:
                    await k8s_config.load_kube_config(
                        config_file=path,
                        context=self._context,
                        client_configuration=configuration,
                        persist_config=False,
                    )
                else:
                    k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                self._api = k8s.ApiClient(configuration)
        return self._api

    async def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await api.close()

    async def _raw(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        query: Sequence[tuple[str, str]] = (),
        what: str,
    ) -> dict[str, Any]:
        """One request, answered as the raw JSON object (camelCase keys, exactly as the server sent)."""
        api = await self._client()
        try:
            response = await api.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Accept": accept, "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
            )
        except ApiException as exc:
            raise _error(exc, what) from exc
        raw = response[0] if isinstance(response, tuple) else response
        async with raw:
            text = await raw.text()
            status = int(raw.status)
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {"message": text[:200]}
        if not 200 <= status <= 299:
            detail = data.get("message") if isinstance(data, dict) else None
            message = f"{what}: HTTP {status}: {detail or text[:200]}"
            raise (
                NotFoundError(message, status=status) if status == 404 else KubeError(message, status=status)
            )
        if not isinstance(data, dict):
            raise KubeError(f"{what}: unexpected answer {type(data).__name__}")
        return data

    # -- identity ---------------------------------------------------------------------------------

    async def token_review(self, token: str, audience: str) -> TokenReviewResult:
        """Ask the API server who ``token`` is, for ``audience`` (needs ``system:auth-delegator``)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        answer = await self._raw(
            "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=body, what="TokenReview"
        )
        status = answer.get("status") or {}
        user = status.get("user") or {}
        authenticated = bool(status.get("authenticated"))
        audiences = tuple(status.get("audiences") or ())
        if authenticated and audiences and audience not in audiences:
            authenticated = False  # the server accepted it for another audience: not ours
        return TokenReviewResult(
            authenticated=authenticated,
            username=str(user.get("username") or ""),
            uid=str(user.get("uid") or ""),
            groups=tuple(user.get("groups") or ()),
            audiences=audiences,
            extra={str(k): tuple(v or ()) for k, v in (user.get("extra") or {}).items()},
            error=str(status.get("error") or ""),
        )

    # -- reads --------------------------------------------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The Pod as a JSON object; :class:`NotFoundError` when it does not exist."""
        return await self._raw(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{name}", what=f"Pod {namespace}/{name}"
        )

    async def get_node(self, name: str) -> dict[str, Any]:
        """The Node as a JSON object (the hub reads its region label); :class:`NotFoundError` if absent."""
        return await self._raw("GET", f"/api/v1/nodes/{name}", what=f"Node {name}")

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._raw(
            "GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", what=f"Secret {namespace}/{name}"
        )

    async def get_namespace(self, name: str) -> dict[str, Any]:
        return await self._raw("GET", f"/api/v1/namespaces/{name}", what=f"Namespace {name}")

    async def get(self, path: str) -> dict[str, Any]:
        """GET any API ``path`` as raw JSON; :class:`NotFoundError` when absent."""
        return await self._raw("GET", path, what=path)

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._raw(
            "GET",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}",
            what=f"{plural} {namespace}/{name}",
        )

    async def list_names(self, path: str, *, field_selector: str = "") -> list[tuple[str, str]]:
        """``(namespace, name)`` of every object at a collection ``path`` (metadata only, one page)."""
        query = [("fieldSelector", field_selector)] if field_selector else []
        answer = await self._raw(
            "GET",
            path,
            accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
            query=query,
            what=f"list {path}",
        )
        out = []
        for item in answer.get("items") or []:
            meta = item.get("metadata") or {}
            out.append((str(meta.get("namespace") or ""), str(meta.get("name") or "")))
        return out

    # -- writes -------------------------------------------------------------------------------------

    async def patch_status(self, plural: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch ``status`` of an llmroute.io object through its status subresource."""
        await self._raw(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status",
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
            what=f"status of {plural} {namespace}/{name}",
        )

    async def create_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        """Post a core/v1 Event about ``involved`` (a full object or its metadata + kind/apiVersion).

        Events are best-effort: a failure is logged, never raised.
        """
        meta = involved.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'llmroute')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": involved.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": namespace,
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": None,
            "count": 1,
        }
        try:
            await self._raw("POST", f"/api/v1/namespaces/{namespace}/events", body=body, what="Event")
        except KubeError as exc:
            log.warning("could not post Event %s/%s: %s", reason, meta.get("name"), exc)

    async def ensure_configmap(
        self, namespace: str, name: str, data: Mapping[str, str], *, labels: Mapping[str, str] | None = None
    ) -> bool:
        """Create or update a ConfigMap so it holds ``data``; True when something was written."""
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "data": dict(data),
        }
        try:
            current = await self._raw(
                "GET",
                f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                what=f"ConfigMap {namespace}/{name}",
            )
        except NotFoundError:
            try:
                await self._raw(
                    "POST", f"/api/v1/namespaces/{namespace}/configmaps", body=body, what="ConfigMap"
                )
                return True
            except KubeError as exc:
                if exc.status != 409:  # created meanwhile by another request: fall through to compare
                    raise
                current = await self._raw(
                    "GET",
                    f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                    what=f"ConfigMap {namespace}/{name}",
                )
        if current.get("data") == dict(data):
            return False
        await self._raw(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/configmaps/{name}",
            body={"data": dict(data)},
            content_type="application/merge-patch+json",
            what=f"ConfigMap {namespace}/{name}",
        )
        return True

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to a collection ``path``; :class:`KubeError` with status 409 when it exists."""
        return await self._raw("POST", path, body=dict(body), what=f"create in {path}")

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT ``body`` at ``path``; with ``metadata.resourceVersion`` set, 409 when someone wrote first."""
        return await self._raw("PUT", path, body=dict(body), what=f"replace {path}")

    async def list_items(self, path: str) -> list[dict[str, Any]]:
        """Every object at a collection ``path`` (one page), as raw JSON."""
        answer = await self._raw("GET", path, what=f"list {path}")
        return [item for item in answer.get("items") or [] if isinstance(item, dict)]


_DEFAULTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, KubeClient] = weakref.WeakKeyDictionary()


def default_client() -> KubeClient:
    """One shared :class:`KubeClient` per running event loop (aiohttp sessions are loop-bound)."""
    loop = asyncio.get_running_loop()
    kube = _DEFAULTS.get(loop)
    if kube is None:
        kube = _DEFAULTS[loop] = KubeClient()
    return kube


async def token_review(token: str, audience: str) -> TokenReviewResult:
    """:meth:`KubeClient.token_review` on the shared client."""
    return await default_client().token_review(token, audience)


async def get_pod(namespace: str, name: str) -> dict[str, Any]:
    """:meth:`KubeClient.get_pod` on the shared client; raises :class:`NotFoundError`."""
    return await default_client().get_pod(namespace, name)
