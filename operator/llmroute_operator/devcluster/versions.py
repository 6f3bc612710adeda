"""Pinned versions of the local control plane, read from ``hack/controlplane/versions.env``.

The file is shell-style ``KEY=VALUE`` so that shell scripts can source it too. :mod:`.paths` finds
it; :mod:`.binaries` and :mod:`.gobuild` build and check binaries against these versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llmroute_operator.devcluster import paths

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


class VersionsError(ValueError):
    """``versions.env`` is missing a key or has a line that is not ``KEY=VALUE``."""


@dataclass(frozen=True)
class Versions:
    """The pinned versions, each with its leading ``v`` (``v1.36.3``)."""

    kubernetes: str
    kubernetes_staging: str
    etcd: str
    helm: str

    @property
    def kubernetes_major(self) -> str:
        return _split(self.kubernetes)[0]

    @property
    def kubernetes_minor(self) -> str:
        return _split(self.kubernetes)[1]


def _split(version: str) -> tuple[str, str, str]:
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)(?:[-+].*)?", version)
    if match is None:
        raise VersionsError(f"not a vMAJOR.MINOR.PATCH version: {version!r}")
    major, minor, patch = match.groups()
    return major, minor, patch


def parse_env(text: str) -> dict[str, str]:
    """Parse shell-style ``KEY=VALUE`` lines; blank lines and ``#`` comments are skipped."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise VersionsError(f"line {number}: expected KEY=VALUE, got {raw!r}")
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load(path: Path | None = None) -> Versions:
    """Read the pinned versions (by default from the repository's ``versions.env``)."""
    path = path or paths.versions_env()
    values = parse_env(path.read_text(encoding="utf-8"))
    keys = {
        "kubernetes": "KUBERNETES_VERSION",
        "kubernetes_staging": "KUBERNETES_STAGING_VERSION",
        "etcd": "ETCD_VERSION",
        "helm": "HELM_VERSION",
    }
    missing = [key for key in keys.values() if key not in values]
    if missing:
        raise VersionsError(f"{path}: missing {', '.join(missing)}")
    versions = Versions(**{field: values[key] for field, key in keys.items()})
    for version in (versions.kubernetes, versions.kubernetes_staging, versions.etcd, versions.helm):
        _split(version)
    return versions
