"""Child processes that never outlive us: own process groups, terminate-then-kill, exit hooks.

:mod:`.controlplane` starts etcd and kube-apiserver through :func:`spawn` and registers its
``stop`` with :func:`on_exit`. Those callbacks run at interpreter exit (``atexit``) and on SIGTERM or
SIGHUP (the handler runs them, then lets the signal do what it did before). Against a ``kill -9`` of
the Python process, non-persistent children also get ``PR_SET_PDEATHSIG`` on Linux, so the kernel
kills them when their parent dies. :mod:`.background` uses :func:`stop_pid` for processes it did
not start itself (``make cluster-down``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

_PR_SET_PDEATHSIG = 1
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

_callbacks: dict[int, Callable[[], None]] = {}
_ids = itertools.count(1)
_lock = threading.RLock()
_installed = False
_previous: dict[int, signal._HANDLER] = {}


def _run_callbacks() -> None:
    with _lock:
        pending = list(_callbacks.items())
        _callbacks.clear()
    for _, callback in reversed(pending):
        try:
            callback()
        except Exception as exc:  # keep going: every child must be stopped
            print(f"llmroute devcluster: cleanup failed: {exc!r}", file=sys.stderr)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _run_callbacks()
    previous = _previous.get(signum, signal.SIG_DFL)
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
    else:
        os.kill(os.getpid(), signum)


def _install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(_run_callbacks)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; atexit and PDEATHSIG remain
    for signum in _HANDLED_SIGNALS:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN or current is None:
            continue  # ignored on purpose (nohup) or set outside Python: leave it alone
        _previous[signum] = current
        signal.signal(signum, _on_signal)


def on_exit(callback: Callable[[], None]) -> int:
    """Run ``callback`` at exit or on SIGTERM/SIGHUP, unless :func:`cancel` is called first."""
    with _lock:
        _install()
        handle = next(_ids)
        _callbacks[handle] = callback
        return handle


def cancel(handle: int) -> None:
    with _lock:
        _callbacks.pop(handle, None)


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel to SIGKILL the child when its parent thread dies."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        # PDEATHSIG follows the *thread* that forked: from a worker thread it would fire too early.
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    persistent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group), output appended to ``log_path``.

    ``persistent`` children (``make cluster-up``) are meant to outlive this process: they get no
    parent-death signal. Registering cleanup is the caller's job (:func:`on_exit`).
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if persistent else _pdeathsig_preexec(),
        )


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_child(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds, and reap the child."""
    if proc.poll() is None:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    _killpg(proc.pid, signal.SIGKILL)  # stragglers left in the group, if any


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def pid_runs(pid: int, executable: Path) -> bool:
    """True when ``pid`` is alive and runs ``executable`` (guards against a recycled PID)."""
    if not pid_alive(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return True  # no /proc: trust the PID
    return Path(argv0) == executable or Path(argv0).name == executable.name


def stop_pid(pid: int, executable: Path, *, grace: float = 10.0) -> bool:
    """Stop a process that is not our child, as :func:`stop_child` does; False if it was not running."""
    if not pid_runs(pid, executable):
        return False
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    target = pgid if pgid == pid else None  # only signal a group the process leads
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if target is not None:
            _killpg(target, signum)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.1)
    return not pid_alive(pid)
