"""Which handler answers a method and path: exact paths by one dict lookup, templated ones
(``/v1/files/{file_id}``, ``/v1/models/{name:.+}``) by regular expression, in the order added.

A path that no route knows is a 404; a path some route knows under other methods is a 405 that
lists them (``Allow``), as aiohttp's router did. A GET route answers HEAD too. Neighbours:
``app.py`` (the application owns one router and puts it innermost in its middleware chain),
``errors.py``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import HTTPMethodNotAllowed, HTTPNotFound

if TYPE_CHECKING:
    from .request import Request
    from .response import StreamResponse
    from .types import Handler

__all__ = ["Router", "compile_template"]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")


def compile_template(template: str) -> re.Pattern[str] | None:
    """The regular expression of a templated path, or None for an exact one.

    ``{name}`` matches one path segment; ``{name:regex}`` matches what the regex does.
    """
    if "{" not in template:
        return None
    parts: list[str] = []
    end = 0
    for found in _PARAM.finditer(template):
        parts.append(re.escape(template[end : found.start()]))
        parts.append(f"(?P<{found.group(1)}>{found.group(2) or '[^{}/]+'})")
        end = found.end()
    rest = template[end:]
    if "{" in rest or "}" in rest:
        raise ValueError(f"bad path template {template!r}")
    parts.append(re.escape(rest))
    return re.compile("".join(parts))


class Router:
    """Routes by method and path; :meth:`handle` is the innermost handler of an application."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._templated: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        self._by_template: dict[str, dict[str, Handler]] = {}

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        if not path.startswith("/"):
            raise ValueError(f"a route's path starts with '/': {path!r}")
        method = method.upper()
        methods = self._by_template.get(path)
        if methods is None:
            methods = self._by_template[path] = {}
            pattern = compile_template(path)
            if pattern is None:
                self._exact[path] = methods
            else:
                self._templated.append((pattern, methods))
        if method in methods:
            raise ValueError(f"{method} {path} is routed twice")
        methods[method] = handler

    def add_get(self, path: str, handler: Handler, *, allow_head: bool = True) -> None:
        self.add_route("GET", path, handler)
        if allow_head:
            self.add_route("HEAD", path, handler)

    def add_post(self, path: str, handler: Handler) -> None:
        self.add_route("POST", path, handler)

    def add_delete(self, path: str, handler: Handler) -> None:
        self.add_route("DELETE", path, handler)

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and path parameters; HTTPNotFound or HTTPMethodNotAllowed otherwise."""
        allowed: list[str] = []
        methods = self._exact.get(path)
        if methods is not None:
            handler = methods.get(method)
            if handler is not None:
                return handler, {}
            allowed += methods
        for pattern, methods in self._templated:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            handler = methods.get(method)
            if handler is not None:
                return handler, found.groupdict()
            allowed += methods
        if allowed:
            raise HTTPMethodNotAllowed(method, path, allowed)
        raise HTTPNotFound(method, path)

    async def handle(self, request: Request) -> StreamResponse:
        handler, request.match_info = self.resolve(request.method, request.path)
        return await handler(request)
