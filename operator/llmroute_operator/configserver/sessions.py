"""One connected sidecar's side of the discovery protocol, as a pure state machine (no I/O, no clock).

The hub (``hub.py``) offers a :class:`Session` every newly compiled config and feeds it every request
the sidecar sends; the session decides what, if anything, to send next:

- a full snapshot per version, each with a fresh nonce;
- nothing while the last response is unanswered (backpressure); the newest offered config waits
  and goes out when the ACK/NACK arrives, so intermediate versions are skipped;
- nothing when the offered version is what the sidecar already runs (no-op recompiles push nothing);
- after a NACK, the rejected version is not sent again; the sidecar keeps its last good config;
- requests echoing a stale nonce (answers to responses superseded on this stream) are ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_proto.v1 import discovery_pb2 as dpb

from .auth import Identity

__all__ = ["Answer", "Push", "Session"]


@dataclass(frozen=True)
class Push:
    """A response to send: the config, its nonce, and when the change behind it happened."""

    version: str
    nonce: str
    config: pb.RouterConfig
    changed_at: float

    def response(self) -> dpb.ConfigResponse:
        return dpb.ConfigResponse(version_info=self.version, nonce=self.nonce, config=self.config)


class Answer(enum.Enum):
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # echoes a nonce that is not the one in flight: ignored


@dataclass
class Session:
    """What the server knows about one stream."""

    id: str
    identity: Identity
    node_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    region: str = ""
    acked_version: str = ""  # what the sidecar runs (its hello, then every ACK)
    desired: pb.RouterConfig | None = None  # the newest compiled config for it
    desired_changed_at: float = 0.0
    desired_routes: dict[str, int] = field(default_factory=dict)  # route name -> generation in `desired`
    problems: dict[str, list[str]] = field(default_factory=dict)  # route -> compile problems
    selected: frozenset[str] = frozenset()  # routes whose selector matches (included or not)
    in_flight: Push | None = None
    rejected_version: str = ""  # the last NACKed version (not re-sent)
    rejected_message: str = ""
    acks: int = 0
    nacks: int = 0
    _nonces: int = 0

    @property
    def synced(self) -> bool:
        """The sidecar runs the newest config compiled for it."""
        return self.desired is not None and self.acked_version == self.desired.version

    def hello(self, request: dpb.ConfigRequest) -> None:
        """The stream's first request: remember what the sidecar already runs."""
        self.node_id = request.node.id
        self.acked_version = request.version_info

    def offer(self, config: pb.RouterConfig, changed_at: float) -> Push | None:
        """A newly compiled config for this sidecar; returns what to send now, if anything."""
        if self.desired is None or config.version != self.desired.version:
            self.desired = config
            self.desired_changed_at = changed_at
            self.desired_routes = {r.name: r.generation for r in config.routes}
        return self._next()

    def answer(self, request: dpb.ConfigRequest) -> tuple[Answer, Push | None]:
        """An ACK or NACK from the sidecar; returns how it was taken and what to send next."""
        flight = self.in_flight
        if flight is None or request.response_nonce != flight.nonce:
            return Answer.STALE, None
        self.in_flight = None
        if request.HasField("error_detail"):
            self.nacks += 1
            self.rejected_version = flight.version
            self.rejected_message = request.error_detail.message or "rejected without a message"
            self.acked_version = request.version_info
            return Answer.NACK, self._next()
        self.acks += 1
        self.acked_version = request.version_info or flight.version
        if self.acked_version == flight.version:
            self.rejected_version = self.rejected_message = ""
        return Answer.ACK, self._next()

    def _next(self) -> Push | None:
        if self.in_flight is not None or self.desired is None:
            return None  # backpressure: the newest config waits for the answer
        version = self.desired.version
        if version in (self.acked_version, self.rejected_version):
            return None
        self._nonces += 1
        self.in_flight = Push(
            version=version,
            nonce=f"{self.id}-{self._nonces}",
            config=self.desired,
            changed_at=self.desired_changed_at,
        )
        return self.in_flight

    def rejected(self, route: str) -> bool:
        """The sidecar NACKed the newest config it was offered, and that config contains ``route``."""
        return (
            self.desired is not None
            and self.rejected_version == self.desired.version
            and route in self.desired_routes
        )
