"""Fixtures every tier may use: a real Redis server (``tests/redis_support.py``).

``redis_server`` is one process per test session; ``redis_url`` hands a test that server emptied
(FLUSHALL) so tests do not see each other's keys.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_support import RedisServer, require_redis_server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_server())
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test stopped it to simulate an outage
    redis_server.flush()
    return redis_server.url
