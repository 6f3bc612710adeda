"""Sending adapter-built requests to providers, with failures classified.

:class:`UpstreamClient` is the contract the attempt loop relies on: ``open(request, adapter)`` returns
an open 2xx response (``read()``, ``iter_chunks()``, ``close()``); transport failures come out as
:class:`ProviderError` of kind CONNECTION or TIMEOUT, and non-2xx answers are classified by the
backend's adapter, so the attempt loop (``attempts.py``) only ever sees the shared error taxonomy.
Three implementations, chosen with ``make_upstream`` (``--upstream-client``,
``LLMROUTE_UPSTREAM_CLIENT``): ``httptools`` (the default, ``upstream_httptools.py``: a keep-alive pool
on httptools' parser), ``aiohttp`` (:class:`Upstream` here: one shared ``ClientSession``, what the
sidecar used first) and ``httpx`` (``upstream_httpx.py``). All three stay so the choice is measured
rather than assumed (``make bench-overhead``, ``docs/performance.md``): httpx's async pool degrades
under concurrency (encode/httpx#3215), and aiohttp's client spends about 0.3M instructions per call
more than the httptools pool on the sidecar's hot path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
from yarl import URL

from .adapters.base import ProviderAdapter, UpstreamRequest
from .adapters.errors import ErrorKind, ProviderError

__all__ = [
    "UPSTREAM_CLIENTS",
    "OpenResponse",
    "Upstream",
    "UpstreamClient",
    "UpstreamClientName",
    "UpstreamResponse",
    "make_upstream",
]

UpstreamClientName = Literal["httptools", "aiohttp", "httpx"]
UPSTREAM_CLIENTS: tuple[UpstreamClientName, ...] = ("httptools", "aiohttp", "httpx")


class OpenResponse(Protocol):
    """An open 2xx provider response."""

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class UpstreamClient(Protocol):
    """What the attempt loop needs from a provider-facing HTTP client."""

    async def open(self, request: UpstreamRequest, adapter: ProviderAdapter) -> OpenResponse: ...

    async def close(self) -> None: ...


@dataclass
class UpstreamResponse:
    """An open 2xx response; the caller reads it and must call :meth:`close`."""

    response: aiohttp.ClientResponse

    async def read(self) -> bytes:
        return await self.response.read()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        async for data, _ in self.response.content.iter_chunks():
            yield data

    def close(self) -> None:
        self.response.close()


class Upstream:
    """The provider-facing HTTP client."""

    def __init__(self, *, connections_per_host: int = 0) -> None:
        self._connections_per_host = connections_per_host
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=self._connections_per_host, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def open(self, request: UpstreamRequest, adapter: ProviderAdapter) -> UpstreamResponse:
        """Send ``request``; return the open 2xx response or raise a classified ProviderError."""
        # Adapters build fully percent-encoded URLs; yarl must not re-quote them (it would turn a
        # Bedrock model id's %3A back into ":"), since a SigV4 signature covers the path as sent.
        url = URL(request.url, encoded=True)
        try:
            response = await self._client().request(
                request.method, url, headers=dict(request.headers), data=request.body
            )
        except TimeoutError as exc:
            raise ProviderError(ErrorKind.TIMEOUT, "timed out", provider=adapter.name) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ProviderError(
                ErrorKind.CONNECTION, f"cannot connect: {exc.os_error}", provider=adapter.name
            ) from exc
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise ProviderError(
                ErrorKind.CONNECTION, f"connection failed: {exc}", provider=adapter.name
            ) from exc
        except aiohttp.ClientError as exc:
            raise ProviderError(
                ErrorKind.CONNECTION, f"request failed: {exc}", provider=adapter.name
            ) from exc
        if response.status >= 300:
            try:
                body = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                response.close()
            error = adapter.error(response.status, dict(response.headers), body)
            raise error
        return UpstreamResponse(response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def make_upstream(name: UpstreamClientName = "httptools") -> UpstreamClient:
    """The provider-facing client called ``name``; httpx is imported only when chosen."""
    if name == "httptools":
        from .upstream_httptools import HttptoolsUpstream

        return HttptoolsUpstream()
    if name == "aiohttp":
        return Upstream()
    if name == "httpx":
        try:
            from .upstream_httpx import HttpxUpstream
        except ImportError as exc:  # httpx is not in the sidecar extra
            raise RuntimeError(f"upstream client 'httpx' needs the httpx package: {exc}") from exc
        return HttpxUpstream()
    raise ValueError(f"unknown upstream client {name!r}; use one of {', '.join(UPSTREAM_CLIENTS)}")
