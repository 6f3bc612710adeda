"""The open connections of one server, so that a stop can reach each one and wait for them all.

Neighbours: ``protocol.py`` (each connection adds and removes itself), ``server.py`` (the stop).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol import HttpProtocol

__all__ = ["Connections"]


class Connections:
    def __init__(self) -> None:
        self.open: set[HttpProtocol] = set()
        self.stopping = False  # a connection accepted from now on closes at once
        self._empty: asyncio.Event | None = None

    def add(self, conn: HttpProtocol) -> None:
        self.open.add(conn)

    def discard(self, conn: HttpProtocol) -> None:
        self.open.discard(conn)
        if not self.open and self._empty is not None:
            self._empty.set()

    async def wait_empty(self) -> None:
        if not self.open:
            return
        if self._empty is None or self._empty.is_set():
            self._empty = asyncio.Event()
        await self._empty.wait()
