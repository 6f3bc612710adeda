"""Build kube-apiserver, etcd and helm from the Go module proxy, with progress on the terminal.

:mod:`.binaries` calls this when no binary is found. kube-apiserver and etcd are built from the
wrapper modules in ``hack/controlplane/{kube-apiserver,etcd}`` (their ``go.mod`` pins the versions of
``hack/controlplane/versions.env``, checked here); helm with ``go install helm.sh/helm/v3/cmd/helm@V``.
Outputs land atomically in the cache directory of :mod:`.paths`, under a lock, so two builds in
parallel do not trample each other. ``GOMODCACHE`` and ``GOCACHE`` stay at Go's defaults.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from llmroute_operator.devcluster import paths
from llmroute_operator.devcluster.versions import Versions

#: Measured cold builds (empty GOCACHE and GOMODCACHE, downloads included) on a 2-core machine:
#: 3m46s, 25s and 1m03s, 5m15s in all.
COLD_BUILD_MINUTES = {"kube-apiserver": 4, "etcd": 1, "helm": 1}
#: How often a running build says it is still alive.
HEARTBEAT_SECONDS = 30.0


class BuildError(RuntimeError):
    """A binary could not be built; the message says what failed and what to do instead."""


def go_executable() -> str:
    """``go`` from PATH, else the usual install location of the official tarball."""
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise BuildError(
            "the Go toolchain (go >= 1.26) is not on PATH, so kube-apiserver/etcd cannot be built; "
            "install Go, or point KUBEBUILDER_ASSETS (or TEST_ASSET_KUBE_APISERVER / TEST_ASSET_ETCD) "
            "at existing binaries"
        )
    return go


@contextlib.contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory/.build.lock`` (blocks while another build runs)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".build.lock", "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"==> waiting for another build in {directory} to finish", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _go_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    env.update(extra or {})
    return env


def run_go(
    args: Sequence[str],
    *,
    cwd: Path,
    label: str,
    env: Mapping[str, str] | None = None,
    out: TextIO = sys.stderr,
) -> None:
    """Run ``go ARGS``, echoing its output and a heartbeat line every :data:`HEARTBEAT_SECONDS`."""
    command = [go_executable(), *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=_go_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tail: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            del tail[:-40]
            print(f"    {line.rstrip()}", file=out, flush=True)

    reader = threading.Thread(target=pump, name=f"go-{label}", daemon=True)
    reader.start()
    try:
        while True:
            try:
                proc.wait(timeout=HEARTBEAT_SECONDS)
                break
            except subprocess.TimeoutExpired:
                elapsed = format_duration(time.monotonic() - started)
                print(f"    ... still building {label} ({elapsed} elapsed)", file=out, flush=True)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    reader.join(timeout=5)
    if proc.returncode != 0:
        raise BuildError(
            f"`{' '.join(command)}` in {cwd} failed with exit code {proc.returncode}:\n{''.join(tail)}"
        )


def _go_json(args: Sequence[str], *, cwd: Path) -> dict[str, object]:
    result = subprocess.run(
        [go_executable(), *args],
        cwd=cwd,
        env=_go_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"`go {' '.join(args)}` in {cwd} failed:\n{result.stderr.strip()}")
    value = json.loads(result.stdout)
    if not isinstance(value, dict):
        raise BuildError(f"`go {' '.join(args)}` did not print a JSON object")
    return value


def required_version(go_mod: Path, module: str) -> str | None:
    """The version at which ``go_mod`` requires ``module`` (None when it does not)."""
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", re.MULTILINE)
    match = pattern.search(go_mod.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def replaced_versions(go_mod: Path) -> dict[str, str]:
    """``replace`` targets of ``go_mod``: old module path -> new version (``a => a vX``)."""
    pattern = re.compile(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+\S+\s+(v\S+)\s*$", re.MULTILINE)
    return {m.group(1): m.group(2) for m in pattern.finditer(go_mod.read_text(encoding="utf-8"))}


def check_wrappers(versions: Versions, hack_dir: Path | None = None) -> None:
    """The wrapper modules must build the versions that ``versions.env`` pins."""
    hack_dir = hack_dir or paths.hack_dir()
    problems: list[str] = []
    apiserver_mod = hack_dir / "kube-apiserver" / "go.mod"
    got = required_version(apiserver_mod, "k8s.io/kubernetes")
    if got != versions.kubernetes:
        problems.append(f"{apiserver_mod} requires k8s.io/kubernetes {got}, want {versions.kubernetes}")
    wrong = {m: v for m, v in replaced_versions(apiserver_mod).items() if v != versions.kubernetes_staging}
    if wrong:
        problems.append(f"{apiserver_mod} replaces {wrong}, want {versions.kubernetes_staging}")
    etcd_mod = hack_dir / "etcd" / "go.mod"
    got = required_version(etcd_mod, "go.etcd.io/etcd/server/v3")
    if got != versions.etcd:
        problems.append(f"{etcd_mod} requires go.etcd.io/etcd/server/v3 {got}, want {versions.etcd}")
    if problems:
        raise BuildError(
            "hack/controlplane is out of step with versions.env (edit go.mod, then `go mod tidy`):\n  "
            + "\n  ".join(problems)
        )


def kubernetes_ldflags(versions: Versions, build_date: str) -> str:
    """``-X`` flags that make ``/version`` report the pinned release instead of v0.0.0-master."""
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={versions.kubernetes}",
            f"-X {package}.gitMajor={versions.kubernetes_major}",
            f"-X {package}.gitMinor={versions.kubernetes_minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate={build_date}",
        ]
    return " ".join(flags)


def _announce(name: str, version: str, how: str, out: TextIO) -> float:
    go_executable()  # fail before promising a build
    minutes = COLD_BUILD_MINUTES[name]
    print(
        f"==> building {name} {version} ({how}); a cold build takes about {minutes} min on 2 cores, "
        "a cached one seconds",
        file=out,
        flush=True,
    )
    return time.monotonic()


def _done(name: str, started: float, dest: Path, out: TextIO) -> None:
    print(f"==> built {name} in {format_duration(time.monotonic() - started)}: {dest}", file=out, flush=True)


def _tmp_output(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.with_name(f".{dest.name}.tmp-{os.getpid()}")


def build_kube_apiserver(versions: Versions, dest: Path, out: TextIO = sys.stderr) -> None:
    module_dir = paths.hack_dir() / "kube-apiserver"
    check_wrappers(versions)
    started = _announce("kube-apiserver", versions.kubernetes, f"go build in {module_dir}", out)
    info = _go_json(["list", "-m", "-json", "k8s.io/kubernetes"], cwd=module_dir)
    build_date = str(info.get("Time") or "1970-01-01T00:00:00Z")
    tmp = _tmp_output(dest)
    try:
        run_go(
            [
                "build",
                "-trimpath",
                "-buildvcs=false",
                "-ldflags",
                kubernetes_ldflags(versions, build_date),
                "-o",
                str(tmp),
                ".",
            ],
            cwd=module_dir,
            label="kube-apiserver",
            out=out,
        )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _done("kube-apiserver", started, dest, out)


def build_etcd(versions: Versions, dest: Path, out: TextIO = sys.stderr) -> None:
    module_dir = paths.hack_dir() / "etcd"
    check_wrappers(versions)
    started = _announce("etcd", versions.etcd, f"go build in {module_dir}", out)
    tmp = _tmp_output(dest)
    try:
        run_go(
            ["build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", str(tmp), "."],
            cwd=module_dir,
            label="etcd",
            out=out,
        )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _done("etcd", started, dest, out)


def install_helm(versions: Versions, dest: Path, out: TextIO = sys.stderr) -> None:
    """``go install helm.sh/helm/v3/cmd/helm@V`` with ``GOBIN`` in the cache, stamped like upstream's Makefile."""
    module = f"helm.sh/helm/v3@{versions.helm}"
    started = _announce("helm", versions.helm, f"go install {module}", out)
    workdir = dest.parent
    info = _go_json(["mod", "download", "-json", module], cwd=workdir)
    flags = [
        "-s",
        "-w",
        f"-X helm.sh/helm/v3/internal/version.version={versions.helm}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    go_mod = info.get("GoMod")
    client_go = required_version(Path(str(go_mod)), "k8s.io/client-go") if go_mod else None
    match = re.fullmatch(r"v0\.(\d+)\.\d+", client_go or "")
    if match:
        # Upstream derives helm's default .Capabilities.KubeVersion from its client-go.
        for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
            flags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={match.group(1)}"]
    gobin = workdir / f".gobin-{os.getpid()}"
    gobin.mkdir(parents=True, exist_ok=True)
    try:
        run_go(
            [
                "install",
                "-trimpath",
                "-buildvcs=false",
                "-ldflags",
                " ".join(flags),
                f"helm.sh/helm/v3/cmd/helm@{versions.helm}",
            ],
            cwd=workdir,
            label="helm",
            env={"GOBIN": str(gobin), "GOFLAGS": ""},
            out=out,
        )
        os.replace(gobin / "helm", dest)
    finally:
        shutil.rmtree(gobin, ignore_errors=True)
    _done("helm", started, dest, out)
