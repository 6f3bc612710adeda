"""The processes under test: started pinned to a core, watched through /proc, always stopped.

Each server runs in its own process with its CPU affinity set before it executes (so every thread it
starts inherits it). CPU time and RSS come from ``/proc/<pid>/stat`` and ``/proc/<pid>/status``.
:class:`Fleet` stops every process it started, on error too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Fleet",
    "Proc",
    "core_busy_seconds",
    "cpu_seconds",
    "free_port",
    "rss_detail_mb",
    "rss_mb",
    "self_cpu_seconds",
]

_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def core_busy_seconds(core: int) -> float:
    """Busy time of one core so far, whoever used it (from /proc/stat): shows foreign load."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / _TICK
    return 0.0


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_detail_mb(pid: int) -> dict[str, float]:
    """VmRSS split into anonymous memory (the heap) and file-backed pages (the mapped interpreter,
    shared libraries): the kernel may page the latter out of an idle process, so RSS can shrink."""
    fields = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(None, 1)[0] if line else ""
        if key in fields:
            out[fields[key]] = round(int(line.split()[1]) / 1024, 1)
    return out


@dataclass
class Proc:
    name: str
    port: int
    core: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Fleet:
    """Starts servers pinned to cores; stop() ends them (SIGTERM, then SIGKILL)."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        core: int,
        env: dict[str, str] | None = None,
        executable: str | None = None,
    ) -> Proc:
        """Start ``executable argv`` (default: this Python) pinned to ``core``, output to a log."""
        log = self.workdir / f"{name}.log"

        def pin() -> None:  # runs in the child before exec, so every thread it starts inherits it
            os.sched_setaffinity(0, {core})

        with log.open("wb") as out:
            popen = subprocess.Popen(
                [executable or sys.executable, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                preexec_fn=pin,
            )
        proc = Proc(name, port, core, popen, log)
        self.procs.append(proc)
        return proc

    async def ready(self, proc: Proc, within: float = 30.0) -> None:
        """Wait until ``proc`` accepts connections on its port."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{proc.log.read_text()[-3000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", proc.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise RuntimeError(f"{proc.name} did not listen on port {proc.port} within {within:.0f}s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self.procs.clear()
