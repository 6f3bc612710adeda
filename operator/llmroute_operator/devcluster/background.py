"""A long-lived local plane for ``make cluster-up`` / ``make cluster-down`` / ``make cluster-status``.

``up`` starts a persistent :class:`~.controlplane.ControlPlane` (its processes outlive the command)
under the state directory of :mod:`.paths` (``~/.cache/llmroute/cluster``), records the PIDs in
``state.json`` and prints ``export KUBECONFIG=...`` on stdout (progress goes to stderr, so
``eval "$(make -s cluster-up)"`` works). ``down`` stops the recorded PIDs with :mod:`.processes`
(checking that each PID still runs the recorded binary). The logs stay in ``<state dir>/plane``.
Driven by :mod:`.__main__`.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from llmroute_operator.devcluster import binaries, processes
from llmroute_operator.devcluster.controlplane import ControlPlane, ControlPlaneError
from llmroute_operator.devcluster.kubectl import Kubectl

STATE_FILE = "state.json"


@dataclass
class State:
    pids: dict[str, int]
    executables: dict[str, str]
    kubectl: str
    kubeconfig: str
    server: str
    work_dir: str
    started_at: float
    startup_seconds: float

    def running(self) -> dict[str, bool]:
        return {
            name: processes.pid_runs(pid, Path(self.executables[name])) for name, pid in self.pids.items()
        }


def load_state(state_dir: Path) -> State | None:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
        return State(**data)
    except (OSError, ValueError, TypeError):
        return None


def _save_state(state_dir: Path, state: State) -> None:
    tmp = state_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    tmp.replace(state_dir / STATE_FILE)


def _export_line(state: State) -> str:
    return f"export KUBECONFIG={state.kubeconfig}"


def up(state_dir: Path, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    state = load_state(state_dir)
    if state is not None:
        if all(state.running().values()):
            print(f"==> the local control plane is already running at {state.server}", file=err)
            print(_export_line(state), file=out)
            return 0
        _stop(state, err)
    found = binaries.ensure(with_helm=False, out=err)
    work_dir = state_dir / "plane"
    shutil.rmtree(work_dir, ignore_errors=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    print(f"==> starting etcd and kube-apiserver in {work_dir}", file=err, flush=True)
    plane = ControlPlane(found, work_dir=work_dir, persistent=True)
    try:
        plane.start()
    except (ControlPlaneError, OSError) as exc:
        plane.stop()
        print(f"error: {exc}", file=err)
        return 1
    state = State(
        pids=plane.pids(),
        executables={"etcd": str(found.etcd.path), "kube-apiserver": str(found.kube_apiserver.path)},
        kubectl=str(found.kubectl.path),
        kubeconfig=str(plane.kubeconfig),
        server=plane.server,
        work_dir=str(work_dir),
        started_at=time.time(),
        startup_seconds=plane.startup_seconds or 0.0,
    )
    _save_state(state_dir, state)
    print(
        f"==> ready in {state.startup_seconds:.1f}s at {state.server} (logs in {work_dir}); "
        "stop it with `make cluster-down`",
        file=err,
    )
    print(_export_line(state), file=out)
    return 0


def _stop(state: State, err: TextIO) -> None:
    # The API server first, so it does not log a storm of etcd errors on the way down.
    for name in ("kube-apiserver", "etcd"):
        pid = state.pids.get(name)
        if pid is None:
            continue
        if processes.stop_pid(pid, Path(state.executables[name])):
            print(f"==> stopped {name} (pid {pid})", file=err)


def down(state_dir: Path, *, err: TextIO = sys.stderr) -> int:
    state = load_state(state_dir)
    if state is None:
        print(f"==> no local control plane recorded in {state_dir}", file=err)
        return 0
    _stop(state, err)
    left = [name for name, alive in state.running().items() if alive]
    if left:
        print(f"error: still running: {', '.join(left)}", file=err)
        return 1
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    print(f"==> the local control plane is down (logs kept in {state.work_dir})", file=err)
    return 0


def status(state_dir: Path, *, out: TextIO = sys.stdout) -> int:
    """Print what runs; exit 0 when the plane runs and answers ``/readyz``, 1 otherwise."""
    state = load_state(state_dir)
    if state is None:
        print(f"not running (nothing recorded in {state_dir})", file=out)
        return 1
    running = state.running()
    for name, alive in running.items():
        print(f"{name:15} pid {state.pids[name]:<8} {'running' if alive else 'NOT running'}", file=out)
    ready = False
    if all(running.values()):
        result = Kubectl(Path(state.kubectl), Path(state.kubeconfig)).run(
            "get", "--raw", "/readyz", check=False
        )
        ready = result.returncode == 0 and result.stdout.strip() == "ok"
    print(f"{'server':15} {state.server} ({'ready' if ready else 'not ready'})", file=out)
    print(f"{'kubeconfig':15} {state.kubeconfig}", file=out)
    print(f"{'logs':15} {state.work_dir}", file=out)
    return 0 if ready else 1
