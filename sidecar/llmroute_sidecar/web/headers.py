"""Header maps: the request's (read-only) and a response's (mutable), both case-insensitive.

Names are kept lower-case, which is how they travel in HTTP/2 and how HTTP/1.1 compares them, so
a lookup lower-cases its key once and is a dict lookup. Request values are decoded as UTF-8 with
``surrogateescape``, as aiohttp did: bytes that are not UTF-8 survive as lone surrogates, and
``openai_api/headers.py`` refuses them where the sidecar reads a value. Response values are checked
when set, so no handler can split a response with a line break. Neighbours: ``protocol.py`` builds
:class:`Headers` from the parser's pairs; ``response.py`` owns :class:`ResponseHeaders`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TypeVar, overload

__all__ = ["Headers", "ResponseHeaders"]

D = TypeVar("D")

_BREAKS = frozenset("\r\n\0")
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


class Headers(Mapping[str, str]):
    """A request's headers. ``get``/``[]`` give a name's first value; :meth:`getall` all of them."""

    __slots__ = ("_first", "_more")

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]] = ()) -> None:
        first: dict[str, str] = {}
        more: list[tuple[str, str]] | None = None
        for raw_name, raw_value in pairs:
            name = raw_name.lower().decode("latin-1")
            value = raw_value.decode("utf-8", "surrogateescape")
            if name in first:
                if more is None:
                    more = []
                more.append((name, value))
            else:
                first[name] = value
        self._first = first
        self._more = more  # the repeats, rare: kept apart so that the common lookup stays a dict's

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str | D) -> str | D: ...
    def get(self, name: str, default: object = None) -> object:
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def getall(self, name: str) -> list[str]:
        key = name.lower()
        found = [self._first[key]] if key in self._first else []
        if self._more:
            found += [value for other, value in self._more if other == key]
        return found

    def __repr__(self) -> str:
        return f"Headers({self._first!r})"


class ResponseHeaders(MutableMapping[str, str]):
    """A response's headers, set before the response starts; a value with a line break is refused."""

    __slots__ = ("_items",)

    def __init__(self, initial: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = {}
        if initial:
            for name, value in initial.items():
                self[name] = value

    def __setitem__(self, name: str, value: str) -> None:
        value = str(value)
        if not _BREAKS.isdisjoint(value) or not _BREAKS.isdisjoint(name):
            raise ValueError(f"the response header {name!r} has a line break")
        self._items[name.lower()] = value

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str | D) -> str | D: ...
    def get(self, name: str, default: object = None) -> object:
        return self._items.get(name.lower(), default)

    def setdefault(self, name: str, default: str = "") -> str:
        found = self._items.get(name.lower())
        if found is None:
            self[name] = default
            return default
        return found

    def block(self) -> str:
        """The header lines as they go on the wire, less the framing ones the server writes itself
        (a handler's Content-Length or Transfer-Encoding would contradict the server's)."""
        items = self._items
        if "content-length" in items or "transfer-encoding" in items or "connection" in items:
            return "".join([f"{n}: {v}\r\n" for n, v in items.items() if n not in _FRAMING])
        return "".join([f"{name}: {value}\r\n" for name, value in items.items()])

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._items!r})"
