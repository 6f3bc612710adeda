"""Where allowance comes from: the operator's Allowances service, or a standalone sidecar's own count.

:class:`AllowanceSource` is what ``guard.py`` needs. ``lease_client.py`` implements it over gRPC to
the operator (operator mode: the hard limit holds across every sidecar together). :class:`LocalSource`
implements it for ``llmroute-sidecar --config`` (no operator): the sidecar counts its own spend per
budget period, from ``Budget.spent_micro_usd`` (the status it was compiled with), rolls it over at the
period's end in the budget's time zone, and derives the state (Normal, SoftLimited, Exhausted) from
the limits. One standalone sidecar enforces its budgets exactly; several standalone replicas each
enforce them alone (sharing a budget across replicas needs the operator).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from llmroute_proto.periods import period_window
from llmroute_proto.v1 import config_pb2 as pb

from .wallet import Grant

__all__ = ["AllowanceSource", "LeaseGone", "LocalSource", "Unreachable"]


class Unreachable(Exception):
    """The granting side cannot be asked now (operator down, not connected, starting up)."""


class LeaseGone(Exception):
    """The lease is unknown or expired there: open a new one."""


class AllowanceSource(Protocol):
    async def lease(self, budget: pb.Budget, amount: int) -> Grant: ...
    async def renew(self, budget: pb.Budget, lease_id: str, spent: int, amount: int) -> Grant: ...
    async def give_back(self, budget: pb.Budget, lease_id: str, spent: int) -> None: ...
    def observe(self, budget: pb.Budget, micro: int) -> None:
        """A settled charge (a standalone sidecar counts it; the operator learns it from usage)."""
        ...

    def current_state(self, budget: pb.Budget) -> int | None:
        """The budget's state as this source knows it right now; None: go by grants and config."""
        ...

    def reset_at(self, budget: pb.Budget) -> datetime | None:
        """When the budget's period ends, if this source knows better than the config."""
        ...


@dataclass
class _Count:
    period_end: datetime | None
    spent: int
    lease: int = 0  # lease number, bumped at each period so wallets re-lease


class LocalSource:
    """Allowance from a standalone sidecar's own count: the whole remainder, one lease per period."""

    def __init__(self, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._counts: dict[str, _Count] = {}

    def _count(self, budget: pb.Budget) -> _Count:
        now = self._clock()
        count = self._counts.get(budget.name)
        if count is None:
            # Start from the spend the config was compiled with, if it is of the current period.
            end = budget.period_end.ToDatetime(tzinfo=UTC) if budget.HasField("period_end") else None
            spent = budget.spent_micro_usd
            if end is None:
                end = self._next_end(budget, now)
            elif now >= end:
                end, spent = self._next_end(budget, now), 0
            count = self._counts[budget.name] = _Count(period_end=end, spent=spent)
        elif count.period_end is not None and now >= count.period_end:
            count.period_end, count.spent, count.lease = self._next_end(budget, now), 0, count.lease + 1
        return count

    @staticmethod
    def _next_end(budget: pb.Budget, now: datetime) -> datetime | None:
        if not budget.period:
            return None
        try:
            return period_window(budget.period, budget.timezone or "UTC", now).end  # type: ignore[arg-type]
        except ValueError:
            return None

    def current_state(self, budget: pb.Budget) -> int:
        count = self._count(budget)
        if budget.hard_limit_micro_usd and count.spent >= budget.hard_limit_micro_usd:
            return pb.BUDGET_STATE_EXHAUSTED
        if budget.soft_limit_micro_usd and count.spent >= budget.soft_limit_micro_usd:
            return pb.BUDGET_STATE_SOFT_LIMITED
        return pb.BUDGET_STATE_NORMAL

    def reset_at(self, budget: pb.Budget) -> datetime | None:
        return self._count(budget).period_end

    def _grant(self, budget: pb.Budget, spent_on_lease: int) -> Grant:
        count = self._count(budget)
        remaining = max(0, budget.hard_limit_micro_usd - count.spent)
        # Cumulative on this lease: what it already spent plus what is left.
        return Grant(
            lease_id=f"local-{count.lease}",
            granted=spent_on_lease + remaining,
            expires_in=math.inf,
            state=self.current_state(budget),
        )

    async def lease(self, budget: pb.Budget, amount: int) -> Grant:
        return self._grant(budget, 0)

    async def renew(self, budget: pb.Budget, lease_id: str, spent: int, amount: int) -> Grant:
        if lease_id != f"local-{self._count(budget).lease}":
            raise LeaseGone(lease_id)
        return self._grant(budget, spent)

    async def give_back(self, budget: pb.Budget, lease_id: str, spent: int) -> None:
        return None

    def observe(self, budget: pb.Budget, micro: int) -> None:
        self._count(budget).spent += max(0, micro)
