"""The audit log: one JSON line per request, on standard output by default (``--audit-log``).

Each line says who called (namespace, workload, tenant, user), what served it (route, model, backend,
region, routing decision, attempts), what it cost (tokens, cost, cache) and how it ended (outcome,
status, latency). Never the prompt or completion text, unless the route sets
``spec.audit.includeText`` (and then only after PII redaction).

Lines are buffered and written whole, in one ``write`` per flush, at most ``flush_seconds`` (0.1 s)
after the first buffered line, or at once when 64 KiB are waiting, and on close: a ``write`` and
``flush`` per request was the largest single cost of the sidecar's own code on the request path
(about 5% of its CPU at load). Envoy's access logs make the same trade (they flush every second).
What a SIGKILL can lose is the last 0.1 s of lines; a clean stop loses none, and the usage stream to
the operator, not this log, is the spend record. Without a running event loop (tools, tests) every
line is written at once. Neighbours: ``request_policies.py`` builds the entries; ``runtime.py`` closes
the log at stop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = ["AuditLog"]

log = logging.getLogger(__name__)
_FLUSH_BYTES = 64 * 1024


class AuditLog:
    def __init__(
        self,
        target: str | None = "-",
        *,
        namespace: str = "",
        workload: str = "",
        flush_seconds: float = 0.1,
    ) -> None:
        """``target``: "-" for standard output, a file path (appended), or None / "off" for no log."""
        self.namespace = namespace
        self.workload = workload
        self.flush_seconds = flush_seconds
        self._stream: IO[bytes] | None
        if target is None or target in ("", "off"):
            self._stream = None
        elif target == "-":
            self._stream = sys.stdout.buffer
        else:
            self._stream = Path(target).open("ab")  # noqa: SIM115 - held for the process's life
        self.lines = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()  # a line may come from a thread (then it is written at once)

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def head(self) -> dict[str, Any]:
        """The fields every line starts with; the caller adds its own to this fresh dict."""
        return {"ts": round(time.time(), 3), "namespace": self.namespace, "workload": self.workload}

    def write(self, entry: dict[str, Any]) -> None:
        """Queue one line. ``entry`` should come from :meth:`head` (else its fields are added)."""
        if self._stream is None:
            return
        if "ts" not in entry:
            entry = {**self.head(), **entry}
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            self._pending.append(line)
            self._pending_bytes += len(line)
            self.lines += 1
        if self._pending_bytes >= _FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_seconds, self.flush)

    def flush(self) -> None:
        """Write what is buffered now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._lock:
            if not self._pending or self._stream is None:
                return
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError) as exc:  # a closed or full stream must not fail requests
                log.warning("audit log write failed: %s", exc)

    def close(self) -> None:
        self.flush()
        if self._stream is not None and self._stream is not sys.stdout.buffer:
            self._stream.close()
        self._stream = None
