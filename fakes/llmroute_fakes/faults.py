"""Fault knobs of the fake providers: what may go wrong with one request, and who decides it.

Neighbours: ``app`` applies the connection-level and status knobs of a request's :class:`FaultSpec`
before the protocol handler runs; ``streaming`` applies the in-stream knobs (slow chunks, cuts, native
error events); ``server`` and ``__main__`` build the :class:`FaultPolicy` that supplies defaults.

One syntax serves the ``x-fake-fault`` request header, the ``--fault`` flag and
``FakeProvider.set_faults``: knobs separated by commas (or semicolons), for example
``status=429,retry_after=2`` or ``cut_after=3,slow_stream_ms=50``. The knobs:

==================  =========================================================================
``status=N``        answer with HTTP status N in the provider's own error shape
``retry_after=S``   add ``retry-after: S`` (seconds) to that error
``reset``           abort the TCP connection with a RST, no HTTP response at all
``hang``            never answer (until the client gives up or the fake stops)
``latency_ms=N``    wait N ms before the response headers
``cut_after=N``     stream: close the connection after N chunks, no proper end
``truncate_after=N``  stream: end the body cleanly after N chunks, without the terminal event
``slow_stream_ms=N``  stream: wait N ms between chunks
``error_event[=N]`` stream: after N chunks (default 1) send the provider's in-stream error
``error_status=N``  which error that in-stream event carries (default: the provider's usual one)
``tool_call[=name]``  answer with a call of the named (or the first) tool, if tools were sent
``batch_ms=N``      batch APIs: a batch created now ends N ms later (default 0: at the next read)
``batch_fail=N``    batch APIs: the batch's first N requests fail (their own error result)
``batch_fail_status=N``  with ``batch_fail``: that failure's status (default 500)
``batch_end=S``     batch APIs: the batch ends ``completed`` (default), ``failed`` (no results),
                    ``expired`` or ``cancelled`` (the first half answered, the rest not)
``batch_ack_ms=N``  batch APIs: the batch is created, then the create answer waits N ms
``none``            ignore the defaults and random failures for this request
==================  =========================================================================

The ``batch_*`` knobs of the request that creates a batch (OpenAI and Azure ``POST /batches``,
Anthropic ``POST /v1/messages/batches``) decide how that batch runs; other requests ignore them.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "BATCH_ENDS",
    "FAULT_HEADER",
    "FaultPlan",
    "FaultPolicy",
    "FaultSpec",
    "FaultSyntaxError",
    "parse_faults",
]

FAULT_HEADER = "x-fake-fault"


class FaultSyntaxError(ValueError):
    """A fault spec that does not parse; the fake answers it with a 400 so typos do not pass silently."""


@dataclass(frozen=True)
class FaultSpec:
    """The knobs for one request. ``None`` means "not set here", so specs can be layered."""

    status: int | None = None
    retry_after: float | None = None
    reset: bool | None = None
    hang: bool | None = None
    latency_ms: int | None = None
    cut_after: int | None = None
    truncate_after: int | None = None
    slow_stream_ms: int | None = None
    error_event: int | None = None
    error_status: int | None = None
    tool_call: str | None = None
    batch_ms: int | None = None
    batch_fail: int | None = None
    batch_fail_status: int | None = None
    batch_end: str | None = None
    batch_ack_ms: int | None = None
    #: ``none`` in a header: use this spec alone, without defaults, queued or random faults.
    isolated: bool = False

    def over(self, base: FaultSpec) -> FaultSpec:
        """This spec layered over ``base``: every knob set here wins."""
        changes = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "isolated" and getattr(self, f.name) is not None
        }
        return dataclasses.replace(base, **changes)

    def __str__(self) -> str:
        parts: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value is False:
                continue
            if f.name == "isolated":
                parts.append("none")
            elif value is True or (f.name == "tool_call" and value == ""):
                parts.append(f.name)
            else:
                parts.append(f"{f.name}={value}")
        return ",".join(parts)


_FLAGS = {"reset", "hang"}
_INTS = {
    "latency_ms",
    "cut_after",
    "truncate_after",
    "slow_stream_ms",
    "batch_ms",
    "batch_fail",
    "batch_ack_ms",
}
_STATUSES = {"status", "error_status", "batch_fail_status"}
#: How a batch may end (``batch_end``).
BATCH_ENDS = ("completed", "failed", "expired", "cancelled")


def parse_faults(text: str) -> FaultSpec:
    """Parse the knob syntax described in the module docstring."""
    values: dict[str, object] = {}
    for raw in text.replace(";", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        key, separator, value = (part.strip() for part in item.partition("="))
        has_value = bool(separator)
        key = key.lower().replace("-", "_")
        if key in ("none", "off"):
            values["isolated"] = True
        elif key in _FLAGS:
            values[key] = _bool(key, value) if has_value else True
        elif key == "tool_call":
            values[key] = value
        elif key == "batch_end":
            if value not in BATCH_ENDS:
                raise FaultSyntaxError(f"fault knob batch_end={value}: one of {', '.join(BATCH_ENDS)}")
            values[key] = value
        elif key == "error_event":
            values[key] = _non_negative(key, value) if has_value else 1
        elif key in _INTS:
            values[key] = _non_negative(key, _required(key, value, has_value))
        elif key in _STATUSES:
            status = _non_negative(key, _required(key, value, has_value))
            if not 400 <= status <= 599:
                raise FaultSyntaxError(f"fault knob {key}={value}: an error status must be 400..599")
            values[key] = status
        elif key == "retry_after":
            try:
                seconds = float(_required(key, value, has_value))
            except ValueError:
                raise FaultSyntaxError(f"fault knob retry_after={value}: not a number of seconds") from None
            if seconds < 0:
                raise FaultSyntaxError("fault knob retry_after must not be negative")
            values[key] = seconds
        else:
            raise FaultSyntaxError(f"unknown fault knob {key!r} in {text!r}")
    return FaultSpec(**values)  # type: ignore[arg-type]


def _required(key: str, value: str, has_value: bool) -> str:
    if not has_value or not value:
        raise FaultSyntaxError(f"fault knob {key} needs a value ({key}=...)")
    return value


def _non_negative(key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise FaultSyntaxError(f"fault knob {key}={value}: not an integer") from None
    if number < 0:
        raise FaultSyntaxError(f"fault knob {key} must not be negative")
    return number


def _bool(key: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise FaultSyntaxError(f"fault knob {key}={value}: expected true or false")


@dataclass(frozen=True)
class FaultPolicy:
    """What every request gets unless its header says otherwise.

    ``defaults`` apply to every request; with probability ``fail_rate`` a request also gets ``failure``
    (by default a 503). ``seed`` makes that draw reproducible: the n-th request that reaches the fake
    always gets the same outcome, whatever its headers say.
    """

    defaults: FaultSpec = field(default_factory=FaultSpec)
    fail_rate: float = 0.0
    failure: FaultSpec = field(default_factory=lambda: FaultSpec(status=503))
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be within 0..1, got {self.fail_rate}")


class FaultPlan:
    """Decides each request's faults: defaults, a random failure, the next queued spec, then the header.

    It is shared between the server's event loop and the test's thread (``FakeProvider`` may run its
    server in a thread), hence the lock.
    """

    def __init__(self, policy: FaultPolicy | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: deque[FaultSpec] = deque()
        self._policy = policy or FaultPolicy()
        self._rng = random.Random(self._policy.seed)

    @property
    def policy(self) -> FaultPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: FaultPolicy) -> None:
        with self._lock:
            self._policy = policy
            self._rng = random.Random(policy.seed)

    def queue(self, *specs: FaultSpec) -> None:
        """Give the next ``len(specs)`` requests these specs, one each, in order of arrival."""
        with self._lock:
            self._queue.extend(specs)

    def clear_queue(self) -> None:
        with self._lock:
            self._queue.clear()

    def decide(self, header: str | None) -> FaultSpec:
        """The spec for one arriving request; raises :class:`FaultSyntaxError` for a bad header."""
        requested = parse_faults(header) if header else FaultSpec()
        with self._lock:
            policy = self._policy
            # Always draw, so that the n-th request's outcome does not depend on earlier headers.
            unlucky = self._rng.random() < policy.fail_rate
            queued = self._queue.popleft() if self._queue else None
        if requested.isolated:
            return requested
        if queued is not None and queued.isolated:
            # A queued ``none`` is a deliberately clean request amid failing ones.
            return requested.over(queued)
        spec = policy.defaults
        if unlucky:
            spec = policy.failure.over(spec)
        if queued is not None:
            spec = queued.over(spec)
        return requested.over(spec)
