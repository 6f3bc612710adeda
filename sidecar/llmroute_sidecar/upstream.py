"""Sending adapter-built requests to providers, with failures classified.

:class:`UpstreamClient` is the contract the attempt loop relies on: ``open(request, adapter)`` returns
an open 2xx response (``read()``, ``iter_chunks()``, ``close()``); transport failures come out as
:class:`ProviderError` of kind CONNECTION or TIMEOUT, and non-2xx answers are classified by the
backend's adapter, so the attempt loop (``attempts.py``) only ever sees the shared error taxonomy.
Three implementations, chosen with ``make_upstream`` (``--upstream-client``,
``LLMROUTE_UPSTREAM_CLIENT``): ``httptools`` (the default, ``upstream_httptools.py``: a keep-alive pool
on httptools' parser), ``aiohttp`` (``upstream_aiohttp.py``: one shared ``ClientSession``, what the
sidecar used first) and ``httpx`` (``upstream_httpx.py``). Only the chosen one is imported: a sidecar
on the default never loads aiohttp (~10 MB of idle RSS). All three stay so the choice is measured rather than
assumed (``make bench-overhead``, ``docs/performance.md``): httpx's async pool degrades
under concurrency (encode/httpx#3215), and aiohttp's client spends about 0.3M instructions per call
more than the httptools pool on the sidecar's hot path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol

from .adapters.base import ProviderAdapter, UpstreamRequest

__all__ = [
    "UPSTREAM_CLIENTS",
    "OpenResponse",
    "UpstreamClient",
    "UpstreamClientName",
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


def make_upstream(name: UpstreamClientName = "httptools") -> UpstreamClient:
    """The provider-facing client called ``name``; aiohttp and httpx are imported only when chosen."""
    if name == "httptools":
        from .upstream_httptools import HttptoolsUpstream

        return HttptoolsUpstream()
    if name == "aiohttp":
        from .upstream_aiohttp import Upstream

        return Upstream()
    if name == "httpx":
        try:
            from .upstream_httpx import HttpxUpstream
        except ImportError as exc:  # httpx is not in the sidecar extra
            raise RuntimeError(f"upstream client 'httpx' needs the httpx package: {exc}") from exc
        return HttpxUpstream()
    raise ValueError(f"unknown upstream client {name!r}; use one of {', '.join(UPSTREAM_CLIENTS)}")
