"""Standalone mode: run from the same LLMRoute/LLMBudget/Secret YAML a platform team would apply.

``llmroute-sidecar --config PATH`` loads one file or a folder, compiles it with the shared pure
compiler (``llmroute_proto.compiler``) into a ``RouterConfig``, and reloads it when the files change
(polling mtimes; no inotify dependency) or on SIGHUP. A reload that fails keeps the last good config.

The sidecar itself never imports the loader and the compiler: each (re)load runs them in a short-lived
child process (``compile_child.py``) and reads back the serialized config, so a standalone sidecar
idles with the memory of an operator-fed one. :func:`compile_path` is the in-process compile that
child (and tools) use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

from llmroute_proto.v1 import config_pb2 as pb

from .store import ConfigError, ConfigStore

__all__ = ["StandaloneSource", "compile_isolated", "compile_path"]

log = logging.getLogger(__name__)


def compile_path(path: Path, *, namespace: str | None = None, region: str = "") -> pb.RouterConfig:
    """Load and compile ``path``; raises ResourceError or ConfigError with a clear message."""
    from llmroute_proto.api.loader import load_paths
    from llmroute_proto.compiler import compile_config

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


def compile_isolated(
    path: Path, *, namespace: str | None, region: str, timeout: float = 60.0
) -> pb.RouterConfig:
    """:func:`compile_path` in a child process; raises ConfigError with the child's message."""
    from .compile_child import REFUSED

    command = [sys.executable, "-m", "llmroute_sidecar.config.compile_child", str(path), "--region", region]
    if namespace is not None:
        command += ["--namespace", namespace]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{path}: compiling took longer than {timeout:.0f}s") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot start the config compiler: {exc}") from None
    message = done.stderr.decode(errors="replace").strip()
    if done.returncode == REFUSED:
        raise ConfigError(message.splitlines()[-1] if message else f"{path}: refused")
    if done.returncode != 0:
        raise ConfigError(f"{path}: the config compiler failed (exit {done.returncode}): {message[-500:]}")
    return pb.RouterConfig.FromString(done.stdout)


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
            config = self._compile()
        except ConfigError as exc:
            return self._refused(exc)
        return self._install(config)

    async def watch(self) -> None:
        """Poll for changes until cancelled."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            if self._fingerprint() == self._stamp:
                continue
            log.info("config files changed, reloading %s", self.path)
            self._stamp = self._fingerprint()
            try:  # the child compiles in a thread: requests keep being served meanwhile
                config = await asyncio.to_thread(self._compile)
            except ConfigError as exc:
                self._refused(exc)
                continue
            self._install(config)

    def _compile(self) -> pb.RouterConfig:
        return compile_isolated(self.path, namespace=self.namespace, region=self.region)

    def _install(self, config: pb.RouterConfig) -> bool:
        try:
            self.store.apply(config)
        except ConfigError as exc:
            self._refused(exc)
        return self.store.current is not None

    def _refused(self, exc: ConfigError) -> bool:
        if self.store.last_error != str(exc):  # store.apply counted it already
            self.store.reject(str(exc))
        log.error("config from %s rejected: %s", self.path, exc)
        return self.store.current is not None


def env_default(name: str, default: str) -> str:
    return os.environ.get(name, default)
