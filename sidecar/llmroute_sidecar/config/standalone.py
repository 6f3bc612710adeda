"""Standalone mode: run from the same LLMRoute/LLMBudget/Secret YAML a platform team would apply.

``llmroute-sidecar --config PATH`` loads one file or a folder, compiles it with the shared pure
compiler (``llmroute_proto.compiler``) into a ``RouterConfig``, and reloads it when the files change
(polling mtimes; no inotify dependency) or on SIGHUP. A reload that fails keeps the last good config.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from llmroute_proto.api.loader import ResourceError, load_paths
from llmroute_proto.compiler import compile_config
from llmroute_proto.v1 import config_pb2 as pb

from .store import ConfigError, ConfigStore

__all__ = ["StandaloneSource", "compile_path"]

log = logging.getLogger(__name__)


def compile_path(path: Path, *, namespace: str | None = None, region: str = "") -> pb.RouterConfig:
    """Load and compile ``path``; raises ResourceError or ConfigError with a clear message."""
    resources = load_paths([path])
    namespaces = sorted({str(r.metadata.get("namespace") or "default") for r in resources.routes})
    if namespace is None:
        if len(namespaces) > 1:
            raise ConfigError(f"{path}: routes span namespaces {namespaces}; choose one with --namespace")
        namespace = namespaces[0] if namespaces else "default"
    # Secrets without a namespace belong to the namespace being compiled, as kubectl -n would do.
    secrets = [
        s if s.namespace != "default" or namespace == "default" else type(s)(namespace, s.name, s.data)
        for s in resources.secrets
    ]
    result = compile_config(
        namespace=namespace,
        routes=resources.routes,
        secrets=secrets,
        budgets=resources.budgets,
        region=region,
    )
    if result.problems:
        details = "; ".join(
            f"{route}: {', '.join(problems)}" for route, problems in sorted(result.problems.items())
        )
        raise ConfigError(f"{path}: {details}")
    return result.config


class StandaloneSource:
    """Feeds a :class:`ConfigStore` from files, reloading on change."""

    def __init__(
        self, path: Path, store: ConfigStore, *, namespace: str | None, region: str, poll_seconds: float = 2.0
    ) -> None:
        self.path = path
        self.store = store
        self.namespace = namespace
        self.region = region
        self.poll_seconds = poll_seconds
        self._stamp: tuple[tuple[str, int, int], ...] = ()

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        files = sorted(self.path.rglob("*")) if self.path.is_dir() else [self.path]
        out = []
        for file in files:
            try:
                stat = file.stat()
            except FileNotFoundError:
                continue
            out.append((str(file), stat.st_mtime_ns, stat.st_size))
        return tuple(out)

    def load(self) -> bool:
        """(Re)load now; returns whether a config is active afterwards. Never raises on bad files."""
        self._stamp = self._fingerprint()
        try:
            config = compile_path(self.path, namespace=self.namespace, region=self.region)
            self.store.apply(config)
        except ConfigError as exc:
            # store.apply counted it already, unless the compiler refused it first
            if self.store.last_error != str(exc):
                self.store.reject(str(exc))
            log.error("config from %s rejected: %s", self.path, exc)
        except (ResourceError, OSError) as exc:
            self.store.reject(str(exc))
            log.error("config from %s rejected: %s", self.path, exc)
        return self.store.current is not None

    async def watch(self) -> None:
        """Poll for changes until cancelled."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            if self._fingerprint() != self._stamp:
                log.info("config files changed, reloading %s", self.path)
                self.load()


def env_default(name: str, default: str) -> str:
    return os.environ.get(name, default)
