"""Holds the running :class:`Snapshot` and swaps it atomically.

A request reads ``store.current`` once and keeps that snapshot for its whole life, so a swap never
changes the config under an in-flight request. :meth:`ConfigStore.apply` validates first: a bad config
raises :class:`ConfigError` and the last good snapshot keeps serving (the operator client turns that
into a NACK). Listeners (metrics, the admin server) hear about each swap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from llmroute_proto.v1 import config_pb2 as pb

from .snapshot import ConfigError, Snapshot, build_snapshot

__all__ = ["ConfigError", "ConfigStore"]

log = logging.getLogger(__name__)


class ConfigStore:
    """The current snapshot, plus the history a sidecar needs to report (last error, swaps)."""

    def __init__(self) -> None:
        self._current: Snapshot | None = None
        self.last_error: str | None = None
        self.swaps = 0
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._rejection_listeners: list[Callable[[str], None]] = []
        self.rejected = 0

    @property
    def current(self) -> Snapshot | None:
        return self._current

    def on_swap(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    def on_reject(self, listener: Callable[[str], None]) -> None:
        self._rejection_listeners.append(listener)

    def reject(self, message: str) -> None:
        """A config that could not be used (invalid, or unreadable files): the last good one stays."""
        self.last_error = message
        self.rejected += 1
        for listener in self._rejection_listeners:
            listener(message)

    def apply(self, config: pb.RouterConfig) -> Snapshot:
        """Validate and swap to ``config``; raises ConfigError and keeps the old one if it is bad."""
        try:
            snapshot = build_snapshot(config)
        except ConfigError as exc:
            self.reject(str(exc))
            log.error("config %s rejected, keeping %s: %s", config.version, self.version or "none", exc)
            raise
        previous = self._current
        self._current = snapshot  # a single reference assignment: atomic for readers
        self.last_error = None
        self.swaps += 1
        if previous is None or previous.version != snapshot.version:
            log.info("config %s active (%d logical models)", snapshot.version, len(snapshot.models))
        for listener in self._listeners:
            listener(snapshot)
        return snapshot

    @property
    def version(self) -> str:
        return self._current.version if self._current else ""
