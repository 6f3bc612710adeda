"""Harness of the upstream fault suite (``test_upstream_faults.py``): real processes, real sockets.

- :class:`ProviderLoop` runs fake providers (``llmroute_fakes.server.FakeProvider``) on one event loop
  in a background thread, so the blocking OpenAI SDK can call them from the test's threads, and so a
  provider can be stopped and started again on the same port (a backend that really goes away);
- :class:`SidecarProcess` is a real ``python -m llmroute_sidecar --config route.yaml`` subprocess on
  free loopback ports, with its audit log in a file; it reads the sidecar's ``/metrics``, its audit
  lines and its resident memory (``/proc/PID/status``);
- :class:`RssWatch` samples that memory while a scenario runs, for its peak;
- :class:`Tally` collects what the app saw, thread-safely;
- :func:`route_yaml` writes the two-backend route every scenario uses (a primary that gets the
  faults, a healthy fallback), with the scenario's resilience policy.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmroute_fakes.server import FakeProvider

__all__ = [
    "INPUT_PER_MILLION",
    "OUTPUT_PER_MILLION",
    "ROUTE",
    "Answer",
    "ProviderLoop",
    "RssWatch",
    "SidecarProcess",
    "Tally",
    "free_port",
    "percentile",
    "poll",
    "route_yaml",
    "run_threads",
]

T = TypeVar("T")
ROUTE = "rel"  # the route's name; metrics label it so
INPUT_PER_MILLION = 2.0
OUTPUT_PER_MILLION = 8.0
_START_TIMEOUT_S = 30.0
_BIND_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(check: Callable[[], T | None], *, timeout: float, interval: float = 0.05) -> T | None:
    """``check()`` until it returns something other than None or False, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class ProviderLoop:
    """An event loop in a thread that serves fake providers; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-providers", daemon=True)
        self._providers: list[FakeProvider] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def provider(self, protocol: str, **kwargs: Any) -> FakeProvider:
        """A started provider; give ``port=free_port()`` to be able to restart it on the same port."""
        provider = FakeProvider(protocol, **kwargs)
        self.run(provider.start())
        self._providers.append(provider)
        return provider

    def __enter__(self) -> ProviderLoop:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            for provider in self._providers:
                self.run(provider.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


def route_yaml(primary: FakeProvider, fallback: FakeProvider, resilience: str) -> str:
    """Route ``chat``: ``primary`` (OpenAI protocol, with a key) first, then ``fallback``."""
    return f"""\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: {ROUTE}, namespace: demo}}
spec:
  models:
  - {{name: chat, strategy: fallback, backends: [primary, fallback]}}
  backends:
  - name: primary
    provider: openai
    model: gpt-4o
    endpoint: {primary.base_url}
    credentialsRef: {{name: keys, key: primary}}
    pricing: {{inputPerMillion: {INPUT_PER_MILLION}, outputPerMillion: {OUTPUT_PER_MILLION}}}
  - name: fallback
    provider: openai-compatible
    model: llama-3
    endpoint: {fallback.base_url}
    pricing: {{inputPerMillion: {INPUT_PER_MILLION}, outputPerMillion: {OUTPUT_PER_MILLION}}}
  resilience:
{resilience.rstrip()}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: demo}}
stringData: {{primary: sk-primary}}
"""


class SidecarProcess:
    """A real sidecar subprocess in standalone mode on ``resources``; ``stop()`` checks its log."""

    def __init__(self, workdir: Path, resources: str, extra_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.extra_args = extra_args
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "route.yaml"
        self.config.write_text(resources)
        self.audit_path = workdir / "audit.jsonl"
        self.log_path = workdir / "sidecar.log"
        self.http_port, self.admin_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        # A free port may be taken by another process between our probe and the sidecar's bind
        # (other test suites share this machine): then pick new ports and start again.
        for _ in range(_BIND_ATTEMPTS):
            if self._start_once():
                return
            self.http_port, self.admin_port = free_port(), free_port()
        raise RuntimeError(f"the sidecar could not bind its ports:\n{self.log_text()[-3000:]}")

    def _start_once(self) -> bool:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "llmroute_sidecar", "--config", str(self.config),
                    "--http-addr", f"127.0.0.1:{self.http_port}",
                    "--grpc-addr", f"127.0.0.1:{free_port()}",
                    "--admin-addr", f"127.0.0.1:{self.admin_port}",
                    "--audit-log", str(self.audit_path), "--watch-seconds", "0",
                    "--log-level", "warning", *self.extra_args,
                ],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        started = time.monotonic()
        last = "no answer"
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1)
                if response.status_code == 200:
                    return True
                last = f"{response.status_code} {response.text.strip()}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if self.process.poll() is not None:
                if "address already in use" in self.log_text():
                    return False
                break
            if time.monotonic() - started > _START_TIMEOUT_S:
                self.process.kill()
                self.process.wait()
                break
            time.sleep(0.1)
        raise RuntimeError(
            f"the sidecar did not become ready in {time.monotonic() - started:.1f}s "
            f"(exit code {self.process.returncode}, last /readyz: {last}):\n{self.log_text()[-3000:]}"
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the sidecar; a traceback in its log is a bug even when every answer looked fine."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"the sidecar did not stop on SIGTERM:\n{self.log_text()[-3000:]}") from None
        text = self.log_text()
        assert "Traceback" not in text, text[-5000:]

    def open_fds(self) -> int:
        """File descriptors the sidecar holds (sockets included): a leaked connection shows here."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kb(self) -> int:
        """The sidecar's resident set size in KiB (``VmRSS`` of ``/proc/PID/status``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line in /proc/PID/status")

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of the sidecar's ``/metrics``, keyed by name and labels."""
        text = httpx.get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5).text
        out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """One sample; route="rel" is implied for the health metrics that carry a route label."""
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        lines = self.audit_path.read_bytes().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def audit_when(self, count: int, *, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The audit lines once at least ``count`` are written (a stream that broke is accounted
        just after its error event reached the app, so the last lines may lag a little)."""
        lines = poll(lambda: lines if len(lines := self.audit()) >= count else None, timeout=timeout)
        return lines if lines is not None else self.audit()

    def audit_of(self, request_ids: set[str], *, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
        """The audit lines by request id once each of ``request_ids`` has one (counting lines is
        not enough when earlier requests, a warm-up's, are in the same log)."""

        def found() -> dict[str, dict[str, Any]] | None:
            lines = {line["request_id"]: line for line in self.audit()}
            return lines if request_ids <= lines.keys() else None

        return poll(found, timeout=timeout) or {line["request_id"]: line for line in self.audit()}

    def __enter__(self) -> SidecarProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.stop()
        else:  # do not hide the scenario's own failure behind a log check
            with contextlib.suppress(AssertionError):
                self.stop()


class RssWatch:
    """Samples a sidecar's RSS every 20 ms from a thread while the ``with`` block runs."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        self._sidecar = sidecar
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-watch", daemon=True)
        self.peak_kb = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self._sidecar.rss_kb())
            self._stop.wait(0.02)

    def __enter__(self) -> RssWatch:
        self.peak_kb = self._sidecar.rss_kb()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Answer:
    """One app request as the app saw it."""

    request_id: str
    seconds: float
    backend: str = ""  # x-llmroute-backend
    attempts: int = 0  # x-llmroute-attempts
    stream: bool = False
    relayed: str = ""  # the text a stream relayed before it ended (or broke)
    first_chunk_s: float | None = None  # when a stream's first content arrived, from the start
    cost_usd: float | None = None  # the x-llmroute-cost-usd header (non-streaming answers)
    usage: tuple[int, int] | None = None  # prompt and completion tokens the app was told
    error: str = ""  # the exception's kind when the request failed, else ""
    detail: str = ""


@dataclass
class Tally:
    """What the app saw across threads."""

    answers: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    @property
    def ok(self) -> list[Answer]:
        return [a for a in self.answers if not a.error]

    @property
    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.error]

    def failures_by_kind(self) -> dict[str, int]:
        return dict(collections.Counter(a.error for a in self.failed))

    def served_by(self) -> dict[str, int]:
        return dict(collections.Counter(a.backend for a in self.ok))


def run_threads(count: int, work: Callable[[int], object]) -> None:
    """``work(i)`` in ``count`` threads; the first exception any of them raised is re-raised."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # a harness bug must fail the test, not vanish with a thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), name=f"app-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
