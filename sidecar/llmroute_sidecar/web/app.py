"""An application: a router, its middlewares, typed state, response hooks and an error renderer.

The shape is aiohttp's, so that the sidecar's handlers read as they did: ``app.router.add_post``,
``app[KEY]`` with a typed :class:`AppKey`, ``middlewares`` of ``(request, handler)``, and
``on_response_prepare`` hooks that see every response before its head goes out (the sidecar echoes
``x-request-id`` there). The hooks are plain functions, not coroutines: they run on every request.
The error renderer turns an :class:`~.errors.HTTPError` into a response; the connection uses it
for what it refuses before a handler runs (a malformed request, headers too large) and for what
escapes every middleware. Neighbours: ``router.py``, ``protocol.py`` (which calls :meth:`handle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .response import Response
from .router import Router

if TYPE_CHECKING:
    from .errors import HTTPError
    from .request import Request
    from .response import StreamResponse
    from .types import ErrorRenderer, Handler, Middleware, PrepareHook

__all__ = ["AppKey", "Application", "plain_error"]

T = TypeVar("T")
DEFAULT_MAX_BODY = 1024**2  # aiohttp's client_max_size


class AppKey(Generic[T]):
    """A typed key of an application's state: ``app[KEY]`` has the key's type."""

    __slots__ = ("name",)

    def __init__(self, name: str, _type: type[T] | None = None) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<AppKey {self.name}>"


def plain_error(error: HTTPError) -> Response:
    """The default rendering: the status and the sentence, as text."""
    return Response(status=error.status, text=f"{error.status}: {error.message}\n", headers=error.headers)


class Application:
    """What a server serves: routes, middlewares and state."""

    def __init__(
        self,
        *,
        middlewares: Sequence[Middleware] = (),
        client_max_size: int = DEFAULT_MAX_BODY,
        error_renderer: ErrorRenderer = plain_error,
    ) -> None:
        self.router = Router()
        self.middlewares = tuple(middlewares)
        self.client_max_size = client_max_size
        self.render_error = error_renderer
        self.on_response_prepare: list[PrepareHook] = []
        self._state: dict[AppKey[Any], Any] = {}
        self._handler: Handler | None = None

    def __getitem__(self, key: AppKey[T]) -> T:
        value: T = self._state[key]
        return value

    def __setitem__(self, key: AppKey[T], value: T) -> None:
        self._state[key] = value

    def get(self, key: AppKey[T], default: T | None = None) -> T | None:
        value: T | None = self._state.get(key, default)
        return value

    async def handle(self, request: Request) -> StreamResponse:
        """The middlewares around the router, built once on the first request."""
        handler = self._handler
        if handler is None:
            handler = self._handler = self._chain()
        return await handler(request)

    def prepare_hooks(self, request: Request, response: StreamResponse) -> None:
        for hook in self.on_response_prepare:
            hook(request, response)

    def _chain(self) -> Handler:
        handler: Handler = self.router.handle
        for middleware in reversed(self.middlewares):
            handler = _bind(middleware, handler)
        return handler


def _bind(middleware: Middleware, inner: Handler) -> Handler:
    async def bound(request: Request) -> StreamResponse:
        return await middleware(request, inner)

    return bound
