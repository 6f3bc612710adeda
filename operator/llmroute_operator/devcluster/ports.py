"""Free TCP ports on the loopback interface, for :mod:`.controlplane`.

The port is released before the server binds it, so another process could take it in between;
:mod:`.controlplane` retries a start that failed with "address already in use".
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
