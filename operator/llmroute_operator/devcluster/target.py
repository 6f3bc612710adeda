"""Which cluster the e2e tests and the demo talk to: a fresh local plane, or an existing cluster.

Environment, read by :func:`mode_from_env` and :func:`open_cluster`:

- ``LLMROUTE_E2E``: unset or ``auto`` — use a local plane when its binaries are there, otherwise
  the caller skips (:class:`ClusterUnavailableError`); ``require`` — a cluster that cannot be had is
  a failure, never a skip (CI); ``skip`` — do not run e2e tests at all.
- ``LLMROUTE_E2E_KUBECONFIG=/path`` — use that kubeconfig's current context; no local plane.
- ``LLMROUTE_E2E_CLUSTER=current`` — use the current context of ``$KUBECONFIG`` / ``~/.kube/config``.

The pytest fixtures in ``tests/e2e/conftest.py`` are thin wrappers over this module, so ``make
demo`` can use the same logic. It builds on :mod:`.binaries`, :mod:`.controlplane` and :mod:`.kubectl`.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmroute_operator.devcluster import binaries, versions
from llmroute_operator.devcluster.controlplane import ControlPlane
from llmroute_operator.devcluster.kubectl import Kubectl

MODE_VAR = "LLMROUTE_E2E"
KUBECONFIG_VAR = "LLMROUTE_E2E_KUBECONFIG"
CLUSTER_VAR = "LLMROUTE_E2E_CLUSTER"


class Mode(enum.Enum):
    AUTO = "auto"
    REQUIRE = "require"
    SKIP = "skip"


class ClusterUnavailableError(RuntimeError):
    """No cluster can be had (binaries missing, kubeconfig absent): skip, unless the mode is require."""


def mode_from_env(env: Mapping[str, str] | None = None) -> Mode:
    env = os.environ if env is None else env
    value = env.get(MODE_VAR, "").strip().lower()
    if value in ("", "auto", "1", "true", "yes"):
        return Mode.AUTO
    if value == "require":
        return Mode.REQUIRE
    if value in ("skip", "0", "false", "no", "off"):
        return Mode.SKIP
    raise ValueError(f"{MODE_VAR}={value!r}: expected require, auto or skip")


@dataclass
class Cluster:
    """A reachable cluster: its kubeconfig, a kubectl bound to it, and the local plane if it is one."""

    kubeconfig: Path
    kubectl: Kubectl
    description: str
    plane: ControlPlane | None = None
    #: The version the API server must report (the pinned one, for a local plane; None otherwise).
    expected_version: str | None = None

    def run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl.run(*args, input=input, check=check)

    def json(self, *args: str, input: str | None = None) -> Any:
        return self.kubectl.json(*args, input=input)

    def create_namespace(self, hint: str = "e2e") -> str:
        """Create a namespace with a unique name derived from ``hint`` and return the name."""
        name = namespace_name(hint)
        self.kubectl.run("create", "namespace", name)
        return name

    def delete_namespace(self, name: str) -> None:
        # Without a controller-manager the namespace stays Terminating: harmless, names are unique.
        self.kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def namespace_name(hint: str) -> str:
    """A DNS-1123 label: ``e2e-<hint>-<random>``, at most 63 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-") or "ns"
    suffix = secrets.token_hex(3)
    return f"{slug[: 63 - len(suffix) - 1].rstrip('-')}-{suffix}"


@contextlib.contextmanager
def open_cluster(
    env: Mapping[str, str] | None = None, *, failure_artifacts: Path | None = None
) -> Iterator[Cluster]:
    """Yield the cluster to test against; a local plane is stopped when the block exits.

    Raises :class:`ClusterUnavailableError` when no cluster can be had for a reason a non-CI run may
    skip on (binaries not built, kubeconfig missing). A plane whose binaries are there but that fails
    to start raises :class:`~.controlplane.ControlPlaneError`: that is a failure in every mode; its
    logs are copied to ``failure_artifacts`` first, when given.
    """
    env = os.environ if env is None else env
    if kubeconfig_path := env.get(KUBECONFIG_VAR):
        path = Path(kubeconfig_path)
        if not path.is_file():
            raise ClusterUnavailableError(f"{KUBECONFIG_VAR}={kubeconfig_path} does not exist")
        kubectl = Kubectl(_kubectl(env), path)
        yield Cluster(path, kubectl, f"existing cluster from {path}")
        return
    if cluster := env.get(CLUSTER_VAR):
        if cluster != "current":
            raise ValueError(f"{CLUSTER_VAR}={cluster!r}: the only value understood is 'current'")
        with _current_context(_kubectl(env), env) as path:
            yield Cluster(path, Kubectl(_kubectl(env), path), "the current kubeconfig context")
        return
    try:
        found = binaries.find(env)
    except binaries.BinaryNotFoundError as exc:
        raise ClusterUnavailableError(str(exc)) from exc
    plane = ControlPlane(found)
    try:
        try:
            plane.start()
        except BaseException:
            if failure_artifacts is not None:
                plane.copy_logs(failure_artifacts)
            raise
        yield Cluster(
            plane.kubeconfig,
            plane.kubectl(),
            f"local control plane at {plane.server}",
            plane=plane,
            expected_version=versions.load().kubernetes,
        )
    finally:
        plane.stop()


def _kubectl(env: Mapping[str, str]) -> Path:
    try:
        return binaries.find_kubectl(env).path
    except binaries.BinaryNotFoundError as exc:
        raise ClusterUnavailableError(str(exc)) from exc


@contextlib.contextmanager
def _current_context(kubectl: Path, env: Mapping[str, str]) -> Iterator[Path]:
    """Flatten the current context into a private kubeconfig, so later context switches do not matter."""
    result = subprocess.run(
        [str(kubectl), "config", "view", "--minify", "--flatten", "--raw"],
        capture_output=True,
        text=True,
        env=dict(env),
        check=False,
        timeout=30,
    )
    if result.returncode != 0 or "current-context" not in result.stdout:
        raise ClusterUnavailableError(f"{CLUSTER_VAR}=current: no current context ({result.stderr.strip()})")
    directory = Path(tempfile.mkdtemp(prefix="llmroute-kubeconfig-"))
    try:
        path = directory / "kubeconfig"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(result.stdout)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)
