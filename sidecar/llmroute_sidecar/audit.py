"""The audit log: one JSON line per request, on standard output by default (``--audit-log``).

Each line says who called (namespace, workload, tenant, user), what served it (route, model, backend,
region, routing decision, attempts), what it cost (tokens, cost, cache) and how it ended (outcome,
status, latency). Never the prompt or completion text, unless the route sets
``spec.audit.includeText`` (and then only after PII redaction). Lines are written whole with one
``write`` call, so concurrent requests never interleave within a line.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = ["AuditLog"]

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, target: str | None = "-", *, namespace: str = "", workload: str = "") -> None:
        """``target``: "-" for standard output, a file path (appended), or None / "off" for no log."""
        self.namespace = namespace
        self.workload = workload
        self._lock = threading.Lock()
        self._stream: IO[bytes] | None
        if target is None or target in ("", "off"):
            self._stream = None
        elif target == "-":
            self._stream = sys.stdout.buffer
        else:
            self._stream = Path(target).open("ab")  # noqa: SIM115 - held for the process's life
        self.lines = 0

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def write(self, entry: dict[str, Any]) -> None:
        if self._stream is None:
            return
        line = orjson.dumps(
            {
                "ts": round(time.time(), 3),
                "namespace": self.namespace,
                "workload": self.workload,
                **entry,
            }
        )
        try:
            with self._lock:
                self._stream.write(line + b"\n")
                self._stream.flush()
                self.lines += 1
        except (OSError, ValueError) as exc:  # a closed or full stream must not fail the request
            log.warning("audit log write failed: %s", exc)

    def close(self) -> None:
        if self._stream is not None and self._stream is not sys.stdout.buffer:
            self._stream.close()
        self._stream = None
