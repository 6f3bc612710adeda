"""A listening socket that serves one application, and its graceful stop.

:meth:`Server.stop` is what ``runtime.py``'s stop sequence needs: stop accepting, close the idle
connections, let the requests in flight finish within the grace (each connection closes after its
answer), then cut what is left and cancel its handlers. Neighbours: ``protocol.py`` (one
:class:`~.protocol.HttpProtocol` per connection), ``app.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from .app import Application
from .connections import Connections
from .limits import Limits
from .protocol import HttpProtocol

__all__ = ["Server"]

log = logging.getLogger(__name__)


class Server:
    """Serves ``app`` on one host:port once started."""

    def __init__(self, app: Application, *, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.connections = Connections()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> int:
        """Bind and listen; returns the port (the one the OS chose when ``port`` is 0)."""
        loop = asyncio.get_running_loop()
        app, limits, connections = self.app, self.limits, self.connections
        self._server = await loop.create_server(
            lambda: HttpProtocol(app, limits=limits, connections=connections),
            host,
            port,
            reuse_address=True,
            backlog=backlog,
        )
        sockets = self._server.sockets
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    @property
    def addresses(self) -> list[tuple[str, int]]:
        if self._server is None:
            return []
        found: list[tuple[str, int]] = []
        for sock in self._server.sockets:
            name = sock.getsockname()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                found.append((str(name[0]), int(name[1])))
        return found

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting; answers in flight get ``grace`` seconds; then the rest is cut."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self.connections.stopping = True
        server.close()
        for conn in list(self.connections.open):
            conn.shutdown()
        try:
            await asyncio.wait_for(self.connections.wait_empty(), timeout=grace)
        except TimeoutError:
            left = list(self.connections.open)
            log.warning(
                "HTTP server: %d connection(s) still busy after %.1f s; cutting them", len(left), grace
            )
            tasks = [task for conn in left if (task := conn.task) is not None]
            for conn in left:
                conn.abort()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=1.0)
