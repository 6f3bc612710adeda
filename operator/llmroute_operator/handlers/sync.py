"""When has the watch delivered what the cluster held at start-up?

The config hub and the budget service must not act on a half-filled index: a sidecar would get a config
without the routes not yet listed, and a budget would start from zero instead of its stored spend. kopf
says nothing about the end of its initial listing, so :class:`InitialSync` lists the names itself
(metadata only) and waits until the handlers reported each of them through :meth:`InitialSync.seen`.
Objects deleted meanwhile drop out when it lists again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from ..kube import KubeClient, KubeError

__all__ = ["InitialSync", "collections"]

log = logging.getLogger(__name__)

#: What the operator watches: (kind for :meth:`InitialSync.seen`, API prefix, plural, field selector).
_WATCHED = (
    ("llmroutes", "/apis/llmroute.io/v1alpha1", "llmroutes", ""),
    ("llmbudgets", "/apis/llmroute.io/v1alpha1", "llmbudgets", ""),
    ("secrets", "/api/v1", "secrets", "type=Opaque"),
)


def collections(namespaces: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(kind, path, field selector)`` of every collection the operator watches."""
    out = []
    for kind, prefix, plural, selector in _WATCHED:
        if namespaces:
            out += [(kind, f"{prefix}/namespaces/{ns}/{plural}", selector) for ns in namespaces]
        else:
            out.append((kind, f"{prefix}/{plural}", selector))
    return out


class InitialSync:
    """Counts what the watch handlers have seen against what the API server lists."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str]] = set()
        self.done = asyncio.Event()

    def seen(self, kind: str, namespace: str, name: str) -> None:
        if not self.done.is_set():
            self._seen.add((kind, namespace, name))

    async def wait(self, *, kube: KubeClient, namespaces: Sequence[str], relist_seconds: float = 2.0) -> None:
        """Return once every listed object was seen by the handlers (sets :attr:`done`)."""
        started = time.monotonic()
        expected: set[tuple[str, str, str]] | None = None
        listed_at = 0.0
        while True:
            if time.monotonic() - listed_at >= relist_seconds:
                try:
                    listed: set[tuple[str, str, str]] = set()
                    for kind, path, selector in collections(namespaces):
                        names = await kube.list_names(path, field_selector=selector)
                        listed |= {(kind, ns, name) for ns, name in names}
                except KubeError as exc:  # e.g. 429 while the API server's storage initializes
                    log.info("initial sync: listing failed, retrying: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                expected, listed_at = listed, time.monotonic()
            if expected is not None and not expected - self._seen:
                break
            await asyncio.sleep(0.05)
        self.done.set()
        self._seen.clear()
        log.info("initial sync: %d objects indexed in %.2fs", len(expected or ()), time.monotonic() - started)
