"""The aiohttp provider-facing client, what the sidecar used first: one shared ``ClientSession``.

Chosen with ``--upstream-client aiohttp``; imported only then (``upstream.py``'s ``make_upstream``),
so a sidecar on the default client never loads aiohttp (~10 MB of idle RSS). Same contract as the
others: ``open(request, adapter)`` returns an open 2xx response, transport failures are
``ProviderError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from yarl import URL

from .adapters.base import ProviderAdapter, UpstreamRequest
from .adapters.errors import ErrorKind, ProviderError

__all__ = ["Upstream", "UpstreamResponse"]


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
