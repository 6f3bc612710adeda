"""Run ``llmroute-operator`` as a child process of the e2e tests, and poll things until they hold.

The child gets the test cluster's kubeconfig and free loopback ports; it dies with the test process
(``PR_SET_PDEATHSIG``), and :meth:`OperatorProcess.stop` sends SIGTERM first, then SIGKILL, so no
operator outlives the tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T], *, timeout: float = 30.0, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log: Path
    args: Sequence[str] = ()
    metrics_port: int = field(default_factory=free_port)
    config_port: int = field(default_factory=free_port)
    webhook_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> OperatorProcess:
        command = [
            sys.executable,
            "-m",
            "llmroute_operator",
            "--webhook-addr",
            f"127.0.0.1:{self.webhook_port}",
            "--config-addr",
            f"127.0.0.1:{self.config_port}",
            "--metrics-addr",
            f"127.0.0.1:{self.metrics_port}",
            *self.args,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.started_at = time.monotonic()
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
            )
        return self

    def get(self, path: str) -> tuple[int, str]:
        """GET on the metrics/probe port: ``(status, body)``; status 0 when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Wait for ``/readyz`` 200; the seconds since start."""

        def ready() -> bool:
            assert self.alive(), f"the operator exited early:\n{self.tail()}"
            return self.get("/readyz")[0] == 200

        wait_for(ready, timeout=timeout, what="the operator's /readyz")
        return time.monotonic() - self.started_at

    def metric(self, sample: str) -> float | None:
        """The value of one exposition line starting with ``sample`` (name plus labels), if any."""
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def status_of(kubectl: Any, plural: str, namespace: str, name: str) -> dict[str, Any]:
    """``status`` plus ``generation`` of an object."""
    obj = kubectl.json("get", plural, name, "-n", namespace)
    return {"generation": obj["metadata"].get("generation"), **(obj.get("status") or {})}
