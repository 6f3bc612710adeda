"""The provider-facing HTTP client on httpx: the measured alternative to ``upstream.py``.

Same contract as :class:`~llmroute_sidecar.upstream_aiohttp.Upstream` (``open(request, adapter)`` returns an
open 2xx response with ``read()``/``iter_chunks()``/``close()``; transport failures are classified as
:class:`ProviderError` of kind CONNECTION or TIMEOUT; non-2xx answers are classified by the adapter),
so ``LLMROUTE_UPSTREAM_CLIENT=httpx`` swaps it in without touching the attempt loop. It exists so the
choice of client is measured rather than assumed (``bench/overhead``, ``docs/performance.md``); the
default stays aiohttp. httpx is not a dependency of the ``sidecar`` extra, so this module is imported
only when it is selected (``upstream.make_upstream``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from .adapters.base import ProviderAdapter, UpstreamRequest
from .adapters.errors import ErrorKind, ProviderError

__all__ = ["HttpxUpstream", "HttpxUpstreamResponse"]

# Match the aiohttp client: no pool bound (backends have their own maxConcurrency), aiohttp's 15 s
# keep-alive, and no client-side timeouts (the attempt loop owns them and cancels the call).
_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=15.0)


@dataclass
class HttpxUpstreamResponse:
    """An open 2xx response; the caller reads it and must call :meth:`close`."""

    response: httpx.Response
    # Closing an httpx async response is a coroutine while the interface's close() is synchronous:
    # an unfinished response is closed by a task kept here until it is done.
    _closing: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    async def read(self) -> bytes:
        return await self.response.aread()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        async for data in self.response.aiter_bytes():
            yield data

    def close(self) -> None:
        # A response read to its end is already closed (httpx releases the connection itself).
        if self.response.is_closed:
            return
        task = asyncio.get_running_loop().create_task(self.response.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


class HttpxUpstream:
    """The provider-facing HTTP client, on one shared ``httpx.AsyncClient``."""

    def __init__(self) -> None:
        self._http: httpx.AsyncClient | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(
                limits=_LIMITS, timeout=None, follow_redirects=True, trust_env=False
            )
            del self._http.headers["user-agent"]  # as upstream.py: send no client User-Agent
        return self._http

    async def open(self, request: UpstreamRequest, adapter: ProviderAdapter) -> HttpxUpstreamResponse:
        """Send ``request``; return the open 2xx response or raise a classified ProviderError."""
        client = self._client()
        try:
            built = client.build_request(
                request.method, request.url, headers=dict(request.headers), content=request.body
            )
            response = await client.send(built, stream=True)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProviderError(ErrorKind.TIMEOUT, "timed out", provider=adapter.name) from exc
        except httpx.ConnectError as exc:
            raise ProviderError(
                ErrorKind.CONNECTION, f"cannot connect: {exc}", provider=adapter.name
            ) from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.DecodingError) as exc:
            raise ProviderError(
                ErrorKind.CONNECTION, f"connection failed: {exc}", provider=adapter.name
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ProviderError(
                ErrorKind.CONNECTION, f"request failed: {exc}", provider=adapter.name
            ) from exc
        if response.status_code >= 300:
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            raise adapter.error(response.status_code, dict(response.headers), body)
        return HttpxUpstreamResponse(response, self._closing)

    async def close(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
