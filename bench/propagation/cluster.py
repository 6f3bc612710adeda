"""What the propagation benchmark does to the cluster: Pods with bound tokens, routes, status reads.

Through ``kubernetes_asyncio`` with the plane's admin kubeconfig, many calls at once (bounded), so
setting up 1,000 pods and tokens takes seconds, not the minutes a ``kubectl`` process per object would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes_asyncio import client, config

__all__ = ["Api", "bench_budget", "bench_route"]

T = TypeVar("T")
GROUP, VERSION = "llmroute.io", "v1alpha1"


def bench_route(
    namespace: str,
    name: str,
    *,
    model: str,
    backend_model: str,
    labels: dict[str, str],
    pricing: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One small route: a logical model served by one OpenAI-compatible backend (no Secret needed)."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LLMRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "workloadSelector": {"matchLabels": labels},
            "models": [{"name": model, "backends": ["local"]}],
            "backends": [
                {
                    "name": "local",
                    "provider": "openai-compatible",
                    "model": backend_model,
                    "endpoint": "http://127.0.0.1:9/v1",
                    "region": "local",
                }
            ],
        },
    }
    if pricing is not None:
        body["spec"]["backends"][0]["pricing"] = pricing
    return body


def bench_budget(namespace: str, name: str, *, route: str, hard_usd: float) -> dict[str, Any]:
    """A daily LLMBudget with only a hard limit, scoped to one route."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LLMBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scope": {"routes": [route]},
            "period": {"type": "daily", "timezone": "UTC"},
            "limits": {"hard": str(hard_usd), "currency": "USD"},
        },
    }


class Api:
    """The few API calls the benchmark makes."""

    def __init__(self, api: client.ApiClient, concurrency: int = 24) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._limit = asyncio.Semaphore(concurrency)

    @classmethod
    async def connect(cls, kubeconfig: Path) -> Api:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self.api.close()

    async def _bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        async with self._limit:
            return await call()

    async def gather(self, calls: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
        return list(await asyncio.gather(*(self._bounded(c) for c in calls)))

    async def pod_with_token(self, namespace: str, name: str, labels: dict[str, str]) -> tuple[str, str]:
        """Create a Pod object and a TokenRequest-minted token bound to it: ``(name, token)``."""
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "serviceAccountName": "app",
                "containers": [{"name": "app", "image": "example.test/app:1"}],
            },
        }
        pod = await self.core.create_namespaced_pod(namespace, body)
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": ["llmroute"],
                "expirationSeconds": 3600,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod.metadata.uid},
            },
        }
        answer = await self.core.create_namespaced_service_account_token("app", namespace, request)
        return name, str(answer.status.token)

    async def create_route(self, body: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        await self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "llmroutes", body)

    async def create_budget(self, body: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        await self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "llmbudgets", body)

    async def budget_status(self, namespace: str, name: str) -> dict[str, Any]:
        answer = await self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "llmbudgets", name)
        return dict(answer.get("status") or {})

    async def routes(self, namespace: str) -> list[dict[str, Any]]:
        answer = await self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "llmroutes")
        return list(answer.get("items") or [])
