"""What one connection of the sidecar's HTTP server accepts, in one frozen value.

The body limit is not here: it is the application's (``Application(client_max_size=...)``), since
the app-facing front and the admin server accept different bodies. Neighbours: ``protocol.py``
enforces these, ``server.py`` hands them to each connection.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    max_target: int = 16 * 1024  # the request line's target (URL): 414 past it
    max_header_bytes: int = 32 * 1024  # all header names and values together: 431 past it
    max_headers: int = 128  # header fields: 431 past it
    keepalive_seconds: float = 75.0  # an idle connection closes after this (aiohttp's default)
    max_pipelined: int = 16  # requests parsed and waiting: reading pauses at this many
    linger_seconds: float = 2.0  # a lingering close drops what the client still sends this long
