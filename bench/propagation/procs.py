"""The processes of the propagation benchmark: the operator, the client workers, and what they cost.

:class:`Operator` runs ``llmroute-operator --dev`` as a child process (never in a process with
clients). :class:`Workers` runs client worker processes (``clients.py`` for config streams,
``budget_clients.py`` for simulated budget sidecars), hands each a share of ``<pod> <token>`` lines
and collects what they report. :class:`Meter` reads ``/proc`` (through ``bench.overhead.procs``):
CPU seconds and RSS of the operator, the API server and etcd, the workers and this process, and the
machine's busy time, so every window also says how much *foreign* load (other work on the machine)
it had to share the two cores with. Everything started here is stopped by ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.overhead.procs import core_busy_seconds, cpu_seconds, free_port, rss_mb

__all__ = ["Meter", "Operator", "Sample", "Workers", "raise_nofile", "tcp_established", "wait_until"]

ROOT = Path(__file__).resolve().parents[2]
Json = dict[str, Any]


def raise_nofile() -> Json:
    """Raise this process's soft file-descriptor limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    now, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft_before": soft, "soft": now, "hard": hard}


def tcp_established(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local port is ``port`` (the server's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


async def wait_until(check: Callable[[], bool], *, within: float, what: str, every: float = 0.005) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(every)


@dataclass(frozen=True)
class Sample:
    """CPU seconds so far of each party, and the machine's busy seconds, at one instant."""

    at: float
    operator: float
    plane: float  # kube-apiserver + etcd
    workers: float
    mine: float  # this process and its reaped children (kubectl)
    busy: float  # every core, whoever used it

    def window(self, later: Sample) -> Json:
        """CPU used between two samples, in seconds and in cores (seconds per wall second)."""
        wall = max(1e-9, later.at - self.at)
        parts = {
            name: getattr(later, name) - getattr(self, name)
            for name in ("operator", "plane", "workers", "mine")
        }
        foreign = max(0.0, (later.busy - self.busy) - sum(parts.values()))
        return {
            "wall_s": round(wall, 3),
            **{f"{name}_cpu_s": round(v, 3) for name, v in parts.items()},
            "operator_cores": round(parts["operator"] / wall, 3),
            "foreign_cores": round(foreign / wall, 3),
        }


@dataclass
class Meter:
    """Reads the CPU and memory of the benchmark's processes from /proc."""

    operator: int
    plane: dict[str, int] = field(default_factory=dict)
    workers: Callable[[], list[int]] = list

    def sample(self) -> Sample:
        def cpu(pid: int) -> float:
            try:
                return cpu_seconds(pid)
            except OSError:
                return 0.0

        usage, children = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return Sample(
            at=time.monotonic(),
            operator=cpu(self.operator),
            plane=sum(cpu(p) for p in self.plane.values()),
            workers=sum(cpu(p) for p in self.workers()),
            mine=usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime,
            busy=sum(core_busy_seconds(c) for c in range(os.cpu_count() or 1)),
        )

    def rss(self) -> Json:
        def mb(pid: int) -> float:
            try:
                return rss_mb(pid)
            except OSError:
                return 0.0

        return {
            "operator_mb": round(mb(self.operator), 1),
            "plane_mb": round(sum(mb(p) for p in self.plane.values()), 1),
            "workers_mb": round(sum(mb(p) for p in self.workers()), 1),
        }

    async def peak_rss(self, stop: asyncio.Event, every: float = 0.1) -> float:
        """The operator's largest RSS (MB) until ``stop`` is set."""
        peak = 0.0
        while not stop.is_set():
            with contextlib.suppress(OSError):
                peak = max(peak, rss_mb(self.operator))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
        return round(peak, 1)


LineHandler = Callable[[str, str], None]


@dataclass
class Workers:
    """Client worker processes and what they report (``up``, ``err``, ``ack``; others to ``on_line``)."""

    target: str
    ca: Path
    namespace: str
    count: int = 2
    module: str = "bench.propagation.clients"
    extra: list[str] = field(default_factory=list)
    on_line: LineHandler | None = None
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    up: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)
    acks: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    #: Pods whose next ACK of a version other than the one noted here ends the current round.
    waiting: dict[str, str] = field(default_factory=dict)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)
    _next: int = 0

    async def start(self) -> None:
        for _ in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module,
                "--target", self.target, "--ca", str(self.ca), "--namespace", self.namespace, *self.extra,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
                limit=2**20,
            )  # fmt: skip
            self.procs.append(proc)
            self._readers.append(asyncio.create_task(self._read(proc)))

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.returncode is None]

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            kind, _, rest = line.decode().strip().partition(" ")
            if kind == "up":
                self.up.add(rest)
            elif kind == "err":
                pod, _, message = rest.partition(" ")
                self.errors[pod] = message
            elif kind == "ack":
                pod, version, instant = rest.split(" ")
                self.acks.setdefault(pod, []).append((version, float(instant)))
                if pod in self.waiting and self.waiting[pod] != version:
                    del self.waiting[pod]
            elif self.on_line is not None:
                self.on_line(kind, rest)

    async def add(self, pods: list[tuple[str, str]]) -> None:
        for pod, token in pods:
            proc = self.procs[self._next % len(self.procs)]
            self._next += 1
            assert proc.stdin is not None
            proc.stdin.write(f"{pod} {token}\n".encode())
        await self.drain()

    async def send(self, line: str) -> None:
        """One line to every worker (a command such as ``go`` or ``stop``)."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{line}\n".encode())
        await self.drain()

    async def drain(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            await proc.stdin.drain()

    def last_version(self, pod: str) -> str:
        acks = self.acks.get(pod)
        return acks[-1][0] if acks else ""

    async def wait_exit(self, within: float) -> None:
        """Close the workers' stdin (their signal to finish) and wait for them to exit."""
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
        deadline = time.monotonic() + within
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in self.procs)), within)
        # A worker that did not finish in time keeps its stdout open: stop() ends it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*self._readers, return_exceptions=True), max(0.1, deadline - time.monotonic())
            )

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for reader in self._readers:
            reader.cancel()


class Operator:
    """``llmroute-operator --dev`` as a child process, ready when its /readyz says so."""

    def __init__(self, kubeconfig: Path, workdir: Path, namespaces: list[str]) -> None:
        self.kubeconfig, self.workdir = kubeconfig, workdir
        self.ca = workdir / "ca.pem"
        self.config_port, self.metrics_port, self.webhook_port = free_port(), free_port(), free_port()
        self.namespaces = namespaces
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.config_port}"

    async def start(self) -> float:
        args = ["--dev", "--ca-out", str(self.ca), "--config-addr", self.target]
        args += ["--metrics-addr", f"127.0.0.1:{self.metrics_port}"]
        args += ["--webhook-addr", f"127.0.0.1:{self.webhook_port}"]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        log = (self.workdir / "operator.log").open("wb")
        started = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmroute_operator", *args,
            stdout=log, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )  # fmt: skip
        await wait_until(self._ready, within=120, what="operator /readyz", every=0.1)
        return time.monotonic() - started

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.returncode is None, "operator exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
