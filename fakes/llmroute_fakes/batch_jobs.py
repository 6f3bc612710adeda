"""Batch jobs of the fakes' batch APIs: requests answered when the job ends, shaped by its knobs.

Neighbours: ``openai_batches`` (OpenAI and Azure Files + Batches) and ``anthropic_batches``
(Message Batches) keep :class:`BatchJob` objects in the fake's :class:`BatchBook` (on
``FakeState``) and render them in their provider's shape; they hand a job a function that answers
one request the way their live endpoint would. A job's knobs come from the faults of the request
that created it (``faults.py``: ``batch_ms``, ``batch_fail``, ``batch_fail_status``, ``batch_end``).
Its clock is wall time, so a job created with ``batch_ms=3000`` is in progress for three seconds
whoever asks, which is what a client polling a real provider sees.
"""

from __future__ import annotations

import email.parser
import email.policy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .faults import FaultSpec
from .protocol import ApiError

__all__ = ["Answer", "BatchBook", "BatchJob", "Outcome", "StoredFile", "multipart_fields", "rfc3339"]

Json = dict[str, Any]
#: Answers one request of a job: (custom_id, request body) -> (HTTP status, response body).
Answer = Callable[[str, Json], tuple[int, Json]]
OutcomeKind = Literal["succeeded", "errored", "expired", "canceled"]


@dataclass(frozen=True)
class Outcome:
    """What became of one request: its answer or error (``status``, ``body``), or no answer at all
    (``expired``/``canceled``, ``status`` 0)."""

    custom_id: str
    kind: OutcomeKind
    status: int = 0
    body: Json = field(default_factory=dict)


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int


@dataclass
class BatchJob:
    """One batch: its requests, when it ends, and (once it has) each request's outcome."""

    id: str
    requests: list[tuple[str, Json]]
    answer: Answer
    created_at: float
    ends_at: float
    end: str = "completed"  # completed | failed | expired | cancelled
    fail: int = 0  # the first ``fail`` requests get an error result ...
    fail_status: int = 500  # ... of this status
    cancel_requested_at: float | None = None
    info: Json = field(default_factory=dict)  # the provider module's own fields
    outcomes: list[Outcome] | None = None
    ended_at: float | None = None

    @classmethod
    def create(
        cls, job_id: str, requests: list[tuple[str, Json]], answer: Answer, faults: FaultSpec, **info: Any
    ) -> BatchJob:
        now = time.time()
        return cls(
            id=job_id,
            requests=requests,
            answer=answer,
            created_at=now,
            ends_at=now + (faults.batch_ms or 0) / 1000,
            end=faults.batch_end or "completed",
            fail=faults.batch_fail or 0,
            fail_status=faults.batch_fail_status or 500,
            info=dict(info),
        )

    def cancel(self) -> None:
        if self.cancel_requested_at is None and self.outcomes is None:
            self.cancel_requested_at = time.time()

    @property
    def final(self) -> str:
        """How the job ended (or will): completed, failed, expired or cancelled."""
        return "cancelled" if self.cancel_requested_at is not None else self.end

    def settle(self, now: float | None = None) -> bool:
        """End the job if its time has come (a cancel ends it at the next look); True once ended."""
        if self.outcomes is not None:
            return True
        now = time.time() if now is None else now
        if self.cancel_requested_at is None and now < self.ends_at:
            return False
        self.ended_at = now
        self.outcomes = self._outcomes()
        return True

    def _outcomes(self) -> list[Outcome]:
        if self.cancel_requested_at is not None:  # cancelled before it ran: nothing was answered
            return [Outcome(custom_id, "canceled") for custom_id, _ in self.requests]
        if self.end == "failed":
            return []
        answered = len(self.requests) if self.end == "completed" else len(self.requests) // 2
        missing: OutcomeKind = "expired" if self.end == "expired" else "canceled"
        out: list[Outcome] = []
        for index, (custom_id, body) in enumerate(self.requests):
            if index >= answered:
                out.append(Outcome(custom_id, missing))
            elif index < self.fail:
                out.append(Outcome(custom_id, "errored", self.fail_status))
            else:
                try:
                    status, answer = self.answer(custom_id, body)
                except ApiError as exc:  # the request itself is bad: its own error result
                    status, answer = exc.status, {"message": exc.message or f"HTTP {exc.status}"}
                out.append(Outcome(custom_id, "succeeded" if status < 300 else "errored", status, answer))
        return out

    def counts(self) -> dict[str, int]:
        """Outcomes by kind (all zero until the job ended)."""
        tally = {"succeeded": 0, "errored": 0, "expired": 0, "canceled": 0}
        for outcome in self.outcomes or ():
            tally[outcome.kind] += 1
        return tally


class BatchBook:
    """The files and batch jobs one fake holds, newest last."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, BatchJob] = {}

    def page(
        self, items: list[Any], *, after: str | None, limit: int, key: Callable[[Any], str]
    ) -> list[Any]:
        """Newest first, starting after the item whose id is ``after``; one extra says has_more."""
        ordered = list(reversed(items))
        if after:
            ids = [key(item) for item in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        return ordered[: limit + 1]


def rfc3339(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def multipart_fields(content_type: str, body: bytes) -> Mapping[str, tuple[str, bytes]]:
    """The parts of a multipart/form-data body: name -> (filename or "", content). The fake's
    middleware has read the body already, so it is parsed from the recorded bytes."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, "Expected a multipart/form-data body with 'purpose' and 'file'.")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, tuple[str, bytes]] = {}
    if not message.is_multipart():
        raise ApiError(400, "The multipart body cannot be read.")
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        filename = part.get_filename() or ""
        fields[name] = (filename, payload if isinstance(payload, bytes) else b"")
    return fields
