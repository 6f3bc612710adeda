"""The Python floor: a bare aiohttp + uvloop passthrough proxy, no parsing, no policy.

It forwards the request (method, path, body, content-type/accept/authorization) to one upstream on a
shared keep-alive ``ClientSession`` and copies back status, content type and body; an SSE answer is
relayed chunk by chunk as it arrives. Anything the sidecar costs beyond this is the price of what it
does (parse, route, account), which is what design.md's latency and throughput targets compare.

    python -m bench.overhead.passthrough --port 18001 --upstream http://127.0.0.1:18000
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

__all__ = ["main", "make_app"]

_FORWARDED = ("content-type", "accept", "authorization")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


async def _proxy(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
    session = request.app[SESSION]
    url = request.app[UPSTREAM] + request.path_qs
    async with session.request(request.method, url, data=body, headers=headers) as upstream:
        if upstream.content_type == "text/event-stream":
            out = web.StreamResponse(status=upstream.status, headers={"content-type": "text/event-stream"})
            await out.prepare(request)
            async for chunk in upstream.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out
        data = await upstream.read()
        return web.Response(status=upstream.status, body=data, content_type=upstream.content_type)


async def _session(
    app: web.Application,
) -> AsyncIterator[None]:  # cleanup context: one pool for the app's life
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None), skip_auto_headers=("User-Agent",)
    ) as session:
        app[SESSION] = session
        yield


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", _proxy)
    return app


async def _main(host: str, port: int, upstream: str) -> None:
    runner = web.AppRunner(make_app(upstream), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"passthrough on http://{host}:{port} -> {upstream}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="A bare aiohttp+uvloop passthrough proxy (the Python floor)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:18000")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_main(args.host, args.port, args.upstream))


if __name__ == "__main__":
    main()
