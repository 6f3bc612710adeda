"""Which experiment arm answered which response, so ``POST /v1/feedback`` can credit a score to it.

``request_policies.py`` remembers every answered request of an experiment (:meth:`ResponseArms.remember`)
under its provider response id; the feedback endpoint (``http.py``) takes it back once
(:meth:`ResponseArms.take`), so a response is scored at most once. With the shared Redis
(``--redis-url``) the entries live there, so the score may reach any replica of the workload; a key
holds the namespace and a hash of the tenant, so another tenant's response is simply not found.
Without Redis, or while it fails, a bounded in-process map serves (the newest entries, same TTL).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["ResponseArms", "Served"]

log = logging.getLogger(__name__)
_TTL_SECONDS = 7 * 86400  # feedback usually comes within minutes; a week covers review queues
_CAPACITY = 100_000


@dataclass(frozen=True)
class Served:
    """The experiment request that produced a response."""

    route: str  # namespace/name
    model: str
    arm: str
    tenant: str

    @property
    def namespace(self) -> str:
        return self.route.partition("/")[0]


def _key(namespace: str, tenant: str, response_id: str) -> str:
    tenant_hash = hashlib.sha256(tenant.encode()).hexdigest()[:16]
    return f"llmroute:feedback:{namespace}:{tenant_hash}:{response_id}"


class ResponseArms:
    def __init__(
        self,
        redis: Any | None,
        *,
        capacity: int = _CAPACITY,
        ttl_seconds: float = _TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.capacity = capacity
        self.ttl = ttl_seconds
        self.clock = clock
        self._local: OrderedDict[str, tuple[float, Served]] = OrderedDict()

    async def remember(self, response_id: str, served: Served) -> None:
        key = _key(served.namespace, served.tenant, response_id)
        if self.redis is not None:
            value = orjson.dumps({"route": served.route, "model": served.model, "arm": served.arm})
            try:
                await self.redis.set(key, value, ex=int(self.ttl))
                return
            except Exception as exc:  # a slow or gone Redis: keep it here instead
                log.debug("feedback index: Redis write failed, keeping it in process: %s", exc)
        self._local[key] = (self.clock() + self.ttl, served)
        self._local.move_to_end(key)
        while len(self._local) > self.capacity:
            self._local.popitem(last=False)

    async def take(self, namespace: str, tenant: str, response_id: str) -> Served | None:
        """The request behind ``response_id`` of this namespace and tenant, forgotten as it is taken."""
        key = _key(namespace, tenant, response_id)
        local = self._local.pop(key, None)
        if local is not None:
            return local[1] if local[0] > self.clock() else None
        if self.redis is None:
            return None
        raw = await self.redis.getdel(key)
        if raw is None:
            return None
        try:
            stored = orjson.loads(raw)
            return Served(route=stored["route"], model=stored["model"], arm=stored["arm"], tenant=tenant)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("feedback index: unreadable entry %s dropped", key)
            return None
