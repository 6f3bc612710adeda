"""From a replica that does not lead to the one that does: usage and allowance calls, forwarded.

Sidecars reach any ready replica (the Service balances them); spend must be counted and allowance
granted in one place. So a replica that does not lead passes ``UsageReporting`` and ``Allowances``
calls on to the leader, whose address it reads from the leader Lease (``leadership.py``), over TLS
verified with the operator's CA, *with the sidecar's own token*: the leader authenticates the
sidecar itself and trusts no replica's word for who is calling. Forwarded calls carry
``x-llmroute-forwarded``; a replica that receives one and does not lead (the Lease just moved)
refuses it with UNAVAILABLE instead of forwarding again, so calls never loop. When leadership
moves, forwarded usage streams end with UNAVAILABLE and the sidecar opens a new one, sending its
unacknowledged batches again; the leader counts each batch once.

:class:`LeaderLink` owns the channel (one per leader address and CA); ``server.py`` uses it. When the
CA file changes (``tls_reload.py``), :meth:`LeaderLink.update_ca` makes the next call open a channel
that verifies with the new CA; calls already under way finish on the old one (it closes when they
end, or after :data:`DRAIN_SECONDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import grpc

__all__ = ["FORWARDED", "LeaderLink", "NoLeader", "forwarded", "forwarding_metadata"]

log = logging.getLogger(__name__)

FORWARDED = "x-llmroute-forwarded"
DRAIN_SECONDS = 600.0  # how long forwarded calls may go on over a channel with the previous CA
_PASSED = ("authorization",)


class NoLeader(LookupError):
    """No replica leads right now (an election is under way), or this one does."""


class _Leadership(Protocol):
    identity: str
    leader: bool
    leader_address: str


def forwarded(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    return any(key.lower() == FORWARDED for key, _ in metadata or ())


def forwarding_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None, *, via: str
) -> tuple[tuple[str, str], ...]:
    """The caller's credentials, and the mark that stops a second hop."""
    out = [
        (key.lower(), value.decode() if isinstance(value, bytes) else value)
        for key, value in metadata or ()
        if key.lower() in _PASSED
    ]
    out.append((FORWARDED, via))
    return tuple(out)


class LeaderLink:
    """A TLS channel to the current leader's config server."""

    def __init__(self, *, leadership: _Leadership, ca_pem: bytes | None, server_name: str = "") -> None:
        self._leadership = leadership
        self._ca_pem = ca_pem
        self._server_name = server_name
        self._address = ""
        self._channel: Any = None
        self._closing: set[asyncio.Task[None]] = set()
        self._draining: dict[asyncio.Task[None], Any] = {}  # long closes (CA change), cut short by close()

    def channel(self) -> Any:
        """The channel to the leader; :class:`NoLeader` when there is none to forward to."""
        leadership = self._leadership
        if leadership.leader:
            raise NoLeader("this replica leads")
        address = leadership.leader_address
        if not address:
            raise NoLeader("no replica leads right now (election in progress); retry")
        if self._ca_pem is None:
            raise NoLeader("cannot reach the leader: this replica has no CA to verify it (--tls-ca)")
        if address != self._address or self._channel is None:
            self._retire()
            options: list[tuple[str, str | int]] = [
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ]
            if self._server_name:
                options.append(("grpc.ssl_target_name_override", self._server_name))
            credentials = grpc.ssl_channel_credentials(root_certificates=self._ca_pem)
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
            self._address = address
            log.info("forwarding spend calls to the leader at %s", address)
        return self._channel

    def update_ca(self, ca_pem: bytes | None) -> None:
        """Verify the leader with ``ca_pem`` from the next call on."""
        if ca_pem == self._ca_pem:
            return
        self._ca_pem = ca_pem
        if self._channel is not None:
            log.info("the CA changed: new forwarded calls use a new channel to the leader")
            self._retire(grace=DRAIN_SECONDS)

    def _retire(self, grace: float = 1.0) -> None:
        old, self._channel = self._channel, None
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.close(grace=grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            if grace > 1.0:
                self._draining[task] = old
                task.add_done_callback(lambda done: self._draining.pop(done, None))

    async def close(self) -> None:
        self._retire()
        draining = list(self._draining.items())
        for task, _ in draining:
            task.cancel()  # channels draining after a CA change: the operator stops now
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._closing, return_exceptions=True)
        for _, channel in draining:
            with contextlib.suppress(Exception):
                await channel.close()
