"""Spend bookkeeping, pure: one budget's spend in its current period, and the sequence logs that make
usage batches count exactly once: :class:`BatchLog` (in memory, for acknowledgements) and
:class:`CountedBatches` (stored with the spend, so a batch re-sent after a crash is not counted again).

Money is integer micro-USD throughout (the unit usage records carry), turned into decimal strings only
at the edge (:func:`from_micro`), so sums over millions of records never drift. ``service.py`` owns the
clock and the index; everything here takes ``now`` as an argument and is unit-tested without one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from llmroute_proto.periods import Window

__all__ = ["BatchLog", "BudgetLedger", "CountedBatches", "Limits", "State", "from_micro", "to_micro"]

State = Literal["Normal", "SoftLimited", "Exhausted"]
_MICRO = Decimal(1_000_000)
#: The forecast extrapolates from at least this share of the period, so the first minutes of a period
#: (a handful of requests in a few seconds) do not forecast absurd totals.
MIN_FORECAST_SHARE = Decimal("0.05")


def to_micro(amount: str | Decimal) -> int:
    """``"12.5"`` -> 12_500_000 (exact; money strings have at most six decimals)."""
    value = Decimal(amount) * _MICRO
    if value != value.to_integral_value():
        raise ValueError(f"amount {amount!r} has more than six decimals")
    return int(value)


def from_micro(micro: int) -> str:
    """12_500_000 -> ``"12.5"``; always plain notation, as the CRD's money pattern wants."""
    text = format((Decimal(micro) / _MICRO).normalize(), "f")
    return text


@dataclass(frozen=True)
class Limits:
    hard: int  # micro-USD
    soft: int | None = None
    alerts: tuple[int, ...] = (50, 80, 100)  # percent of hard


@dataclass
class BudgetLedger:
    """Spend of one budget in one period. ``revision`` grows with every change worth persisting."""

    window: Window
    limits: Limits
    spent: int = 0
    alerted_percent: int = 0  # the highest threshold already reported (persisted with the status)
    revision: int = 0

    def add(self, micro: int) -> None:
        if micro > 0:
            self.spent += micro
            self.revision += 1

    def roll(self, window: Window) -> None:
        """A new period: spend and alerts start over."""
        self.window = window
        self.spent = 0
        self.alerted_percent = 0
        self.revision += 1

    @property
    def remaining(self) -> int:
        return max(0, self.limits.hard - self.spent)

    @property
    def state(self) -> State:
        if self.spent >= self.limits.hard:
            return "Exhausted"
        if self.limits.soft is not None and self.spent >= self.limits.soft:
            return "SoftLimited"
        return "Normal"

    def forecast(self, now: datetime) -> int:
        """Spend expected at the period's end if the run rate so far continues."""
        length = Decimal((self.window.end - self.window.start).total_seconds())
        elapsed = Decimal(max(0.0, (now - self.window.start).total_seconds()))
        left = Decimal(max(0.0, (self.window.end - now).total_seconds()))
        basis = max(elapsed, length * MIN_FORECAST_SHARE)
        if basis <= 0:
            return self.spent
        return self.spent + int((Decimal(self.spent) / basis * left).to_integral_value())

    def crossed(self) -> tuple[int, ...]:
        """Alert thresholds the spend has reached, ascending."""
        return tuple(sorted(p for p in set(self.limits.alerts) if self.spent * 100 >= p * self.limits.hard))

    def new_alerts(self) -> tuple[int, ...]:
        """Thresholds reached but not yet reported."""
        return tuple(p for p in self.crossed() if p > self.alerted_percent)


Tickets = Mapping[tuple[str, str], int]  # budget key -> ledger revision that must be persisted


@dataclass
class BatchLog:
    """The batches one sidecar instance sent: duplicates, and the acknowledgement watermark.

    A batch counts once (:meth:`accept` refuses a sequence seen before) and is acknowledged once it,
    and every batch before it, has been persisted: its ``tickets`` name, per budget it touched, the
    ledger revision that holds its spend. The first batch an operator sees from a sidecar sets the
    base: the sidecar had everything below it acknowledged by a previous operator (it resends from
    its oldest unacknowledged batch, in order).
    """

    watermark: int = -1  # highest contiguous acknowledged sequence; -1: nothing seen yet
    _pending: dict[int, Tickets] = field(default_factory=dict)  # received, not yet acknowledged

    def duplicate(self, sequence: int) -> bool:
        return self.watermark >= 0 and (sequence <= self.watermark or sequence in self._pending)

    def accept(self, sequence: int, tickets: Tickets) -> None:
        if self.watermark < 0:
            self.watermark = sequence - 1
        self._pending[sequence] = dict(tickets)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def advance(self, persisted: Callable[[tuple[str, str]], int]) -> bool:
        """Move the watermark over batches whose spend is persisted; True if it moved."""
        moved = False
        while (tickets := self._pending.get(self.watermark + 1)) is not None:
            if any(persisted(key) < revision for key, revision in tickets.items()):
                break
            del self._pending[self.watermark + 1]
            self.watermark += 1
            moved = True
        return moved


#: How long a sidecar's entry stays in ``status.countedUsage`` after its last counted batch. A batch
#: is re-sent only when its acknowledgement was lost (a crash, a dropped stream), and a sidecar re-sends
#: within its reconnect backoff (30 s at most by default); an hour is ample and bounds the list.
COUNTED_HORIZON = timedelta(hours=1)
#: At most this many entries per budget (the newest), so status stays far below etcd's object limit.
COUNTED_LIMIT = 10_000


@dataclass
class CountedBatches:
    """Per sidecar instance, the last usage batch whose spend one budget's ledger includes.

    Stored in ``LLMBudget.status.countedUsage`` by the same write as the spend, so the two can never
    disagree: after a crash between that write and the acknowledgement, the sidecar sends the batch
    again and the next leader, seeded from status, recognises it. A sidecar sends its batches in
    sequence order on one stream, so the spend always includes a prefix of them: remembering the last
    sequence is enough. A sidecar instance that restarts has a new id, hence a new sequence space.
    """

    last: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # sidecar -> (sequence, when)

    def includes(self, sidecar: str, sequence: int) -> bool:
        entry = self.last.get(sidecar)
        return entry is not None and sequence <= entry[0]

    def record(self, sidecar: str, sequence: int, now: datetime) -> None:
        entry = self.last.get(sidecar)
        if entry is None or sequence > entry[0]:
            self.last[sidecar] = (sequence, now)

    def prune(self, now: datetime) -> None:
        """Forget sidecars idle past :data:`COUNTED_HORIZON`, and the oldest beyond :data:`COUNTED_LIMIT`."""
        stale = [s for s, (_, at) in self.last.items() if now - at > COUNTED_HORIZON]
        for sidecar in stale:
            del self.last[sidecar]
        if len(self.last) > COUNTED_LIMIT:
            newest = sorted(self.last.items(), key=lambda item: item[1][1], reverse=True)[:COUNTED_LIMIT]
            self.last = dict(newest)
