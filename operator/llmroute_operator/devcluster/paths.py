"""Where things live: the repository's ``hack/controlplane`` and the per-user cache.

Used by :mod:`.versions` (the pinned versions), :mod:`.binaries` and :mod:`.gobuild` (the binary
cache) and :mod:`.background` (the state of ``make cluster-up``).
"""

from __future__ import annotations

import os
from pathlib import Path

_MARKER = Path("hack") / "controlplane" / "versions.env"


class RepoNotFoundError(RuntimeError):
    """The package is not running from a checkout of the repository (no ``hack/controlplane``)."""


def repo_root() -> Path:
    """The checkout this package was imported from (it is installed editable from ``operator/``)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / _MARKER).is_file():
            return parent
    raise RepoNotFoundError(
        f"no {_MARKER} above {Path(__file__).resolve()}: the dev control plane needs a checkout of llmroute"
    )


def hack_dir() -> Path:
    """``hack/controlplane``: ``versions.env`` and the Go wrapper modules."""
    return repo_root() / "hack" / "controlplane"


def versions_env() -> Path:
    return hack_dir() / "versions.env"


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/llmroute``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmroute"


def binaries_dir(kubernetes_version: str) -> Path:
    """The built binaries of one Kubernetes version; usable as ``KUBEBUILDER_ASSETS``."""
    return cache_root() / "controlplane" / kubernetes_version


def cluster_state_dir() -> Path:
    """The long-lived plane of ``make cluster-up`` (override with ``LLMROUTE_CLUSTER_DIR``)."""
    override = os.environ.get("LLMROUTE_CLUSTER_DIR")
    return Path(override) if override else cache_root() / "cluster"
