"""What operator mode is configured with: where the config server is, who we claim to be, how we retry.

Plain values, no gRPC: ``__main__.py`` and ``runtime.py`` build them without importing the client
(``operator_client.py``, which loads grpc), so a standalone sidecar never pays for it.
"""

from __future__ import annotations

import os
import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Backoff", "ClientSettings", "NodeInfo"]


@dataclass(frozen=True)
class NodeInfo:
    """Claims about this sidecar, from the downward API (the injected env)."""

    id: str
    pod_name: str = ""
    namespace: str = ""
    pod_uid: str = ""
    node_name: str = ""
    region: str = ""
    version: str = "0.1.0"
    workload_name: str = ""  # LLMROUTE_WORKLOAD, when the pod's owner is known better than its name

    @property
    def workload(self) -> str:
        """The workload for the audit log: the set name, else the pod name less its generated suffixes
        (``chatbot-7d9f8c6b5-x2k4q`` -> ``chatbot``), which is what a Deployment's pods share."""
        if self.workload_name:
            return self.workload_name
        return _POD_SUFFIX.sub("", self.pod_name)

    @classmethod
    def from_env(cls, *, region: str = "", environ: Mapping[str, str] | None = None) -> NodeInfo:
        env = os.environ if environ is None else environ
        return cls(
            id=f"{env.get('POD_NAME') or 'sidecar'}-{uuid.uuid4().hex[:12]}",
            pod_name=env.get("POD_NAME", ""),
            namespace=env.get("POD_NAMESPACE", ""),
            pod_uid=env.get("POD_UID", ""),
            node_name=env.get("NODE_NAME", ""),
            region=region,
            workload_name=env.get("LLMROUTE_WORKLOAD", ""),
        )


# A ReplicaSet's pod-template hash and the pod's own 5-character suffix, or a StatefulSet's ordinal.
_POD_SUFFIX = re.compile(r"(-[a-z0-9]{8,10})?-[a-z0-9]{5}$|-\d+$")


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff: the n-th wait is uniform in [0, min(max, base * 2**n)]."""

    base: float = 0.5
    max: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max, self.base * 2 ** min(attempt, 30)))


@dataclass(frozen=True)
class ClientSettings:
    target: str  # host:port of the config server
    token_file: Path
    ca_file: Path
    server_name: str | None = None  # TLS name to verify, when it differs from the target's host
    backoff: Backoff = Backoff()
    usage_interval: float = 0.5
