"""Outlier ejection limits: at most ``maxEjectedPercent`` of a model's backends out at once.

A group is the backend set of one logical model (its ``backends`` list or its ``split``). A backend
may belong to several groups (models of one route share backends); it may be ejected only if every
group it belongs to stays within its cap. ``book.py`` asks :meth:`EjectionGroups.may_eject` before a
breaker opens (``breaker.py``'s ``may_open``) and calls :meth:`EjectionGroups.excess` after a config
swap, when a group may have shrunk under ejected backends.

The cap is ``floor(percent * size)`` and never the whole group: a shared outage — or one bad minute
that trips every breaker — leaves the least-bad backends serving instead of emptying the route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["EjectionGroups", "ejection_cap"]


def ejection_cap(percent: int, size: int) -> int:
    """How many of ``size`` backends may be ejected at once under ``percent``."""
    if size <= 1:
        return 0
    return max(0, min(size * percent // 100, size - 1))


class EjectionGroups:
    """The backend groups of one route and their shared cap."""

    __slots__ = ("_of", "groups", "percent")

    def __init__(self, groups: Iterable[Iterable[str]], percent: int) -> None:
        unique: dict[frozenset[str], None] = {frozenset(g): None for g in groups}
        self.groups: tuple[frozenset[str], ...] = tuple(unique)
        self.percent = percent
        self._of: dict[str, list[frozenset[str]]] = {}
        for group in self.groups:
            for name in group:
                self._of.setdefault(name, []).append(group)

    def may_eject(self, backend: str, ejected: Callable[[str], bool]) -> bool:
        """Whether ejecting ``backend`` keeps every group it belongs to within the cap."""
        for group in self._of.get(backend, ()):
            out = sum(1 for name in group if name != backend and ejected(name))
            if out + 1 > ejection_cap(self.percent, len(group)):
                return False
        return True

    def excess(self, ejected: Callable[[str], bool], order: Callable[[str], float]) -> list[str]:
        """Ejected backends to reinstate so that every group is within its cap again.

        Those ejected last (highest ``order``) go back first, so the backends with the longest
        record of failure stay out.
        """
        out: set[str] = {name for name in self._of if ejected(name)}
        back: list[str] = []
        for group in self.groups:
            members = sorted((n for n in group if n in out), key=order, reverse=True)
            cap = ejection_cap(self.percent, len(group))
            for name in members[: max(0, len(members) - cap)]:
                out.discard(name)
                back.append(name)
        return back
