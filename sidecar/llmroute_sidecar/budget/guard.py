"""Budgets in the request path: which budgets a request is charged to, whether it may spend, and
where it goes past a soft limit.

:class:`BudgetGuard` keeps one :class:`~.wallet.Wallet` per budget with a hard limit (every budget the
compiler emits has one) and tops them up in the background from an :class:`~.source.AllowanceSource`
(the operator's leases, or a standalone sidecar's own count), so no renewal sits on the request path.
For each request the service opens a :class:`Charge`: before every attempt (first try, retry or
fallback) it reserves the estimated cost on *that* backend in every budget in scope, and a backend
priced 0 needs no allowance, so a free primary stays usable past the limit while a paid fallback is
refused. When a reservation fails and the source cannot be reached, the budget's failureMode decides:
closed refuses, open admits and lets the usage stream count it later (``fail_open`` events, never
silent). Past the soft limit, :attr:`Charge.downgrade` says which tier or backend replaces the
candidates (``service.py`` applies it, ``x-llmroute-downgraded`` reports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC

from llmroute_proto.v1 import config_pb2 as pb

from .scope import matching_budgets
from .source import AllowanceSource, LeaseGone, Unreachable
from .wallet import Wallet

__all__ = ["BudgetGuard", "BudgetRefusal", "Charge", "Downgrade", "Reservation"]

log = logging.getLogger(__name__)
Listener = Callable[[str, str], None]  # (event, budget name)
_TICK = 0.25
_TIER_NAMES: dict[int, str] = {pb.TIER_SMALL: "small", pb.TIER_MEDIUM: "medium", pb.TIER_LARGE: "large"}
#: At most this long on the request path, only when a wallet cannot cover a request (a burst, the
#: first request, a request estimated far above the usual ones). Long enough for a lease round trip
#: to a loaded operator: 0.5 s refused requests of a budget with 70% left on a busy 2-core machine.
_URGENT_WAIT = 2.0


@dataclass(frozen=True)
class Downgrade:
    budget: str
    tier: int = 0  # pb.Tier; 0: a backend instead
    backend: str = ""

    @property
    def target(self) -> str:
        return self.backend or _TIER_NAMES.get(self.tier, "unspecified")


@dataclass(frozen=True)
class BudgetRefusal:
    budget: str
    reset_at: str  # RFC 3339, or "" when unknown
    reason: str


@dataclass
class Reservation:
    """Money one attempt holds in each budget in scope until its cost is known."""

    guard: BudgetGuard
    amounts: list[tuple[Wallet, int]] = field(default_factory=list)
    budgets: tuple[pb.Budget, ...] = ()
    done: bool = False

    def settle(self, actual: int) -> None:
        if self.done:
            return
        self.done = True
        now = self.guard.clock()
        held = {id(wallet): amount for wallet, amount in self.amounts}
        for budget in self.budgets:
            wallet = self.guard.wallets.get(budget.name)
            if wallet is not None:
                wallet.settle(held.get(id(wallet), 0), actual, now)
            self.guard.source.observe(budget, actual)
            self.guard.listener("settle", budget.name)
        self.guard.wake()

    def release(self) -> None:
        if self.done:
            return
        self.done = True
        for wallet, amount in self.amounts:
            wallet.release(amount)


@dataclass
class Charge:
    """The budgets one request is in, as the service sees them."""

    guard: BudgetGuard
    budgets: tuple[pb.Budget, ...]
    downgrade: Downgrade | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.budgets)

    async def reserve(self, amount: int) -> Reservation | BudgetRefusal:
        return await self.guard.reserve(self.budgets, amount)


class BudgetGuard:
    def __init__(
        self,
        *,
        source: AllowanceSource,
        clock: Callable[[], float] = time.monotonic,
        listener: Listener | None = None,
    ) -> None:
        self.source = source
        self.clock = clock
        self.listener = listener or (lambda event, budget: None)
        self.budgets: dict[str, pb.Budget] = {}
        self.wallets: dict[str, Wallet] = {}
        self._config_at = float("-inf")
        self._unreachable: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- config -------------------------------------------------------------------------------------

    def sync(self, config: pb.RouterConfig) -> None:
        """Follow a config swap: track its budgets, give back leases of budgets that went away."""
        self._config_at = self.clock()
        budgets = {b.name: b for b in config.budgets if b.requires_allowance}
        for name in [n for n in self.wallets if n not in budgets]:
            wallet = self.wallets.pop(name)
            if wallet.lease_id and self._task is not None:
                asyncio.get_running_loop().create_task(
                    self.source.give_back(self.budgets[name], wallet.lease_id, wallet.spent)
                )
        for name, budget in budgets.items():
            wallet = self.wallets.setdefault(name, Wallet(budget=name))
            wallet.exhausted = False  # limits or state may have moved: ask again
            # Lease at once, in steps of at least 0.5% of the hard limit: a sidecar that lost the
            # operator right after a push still holds allowance to serve with.
            wallet.floor = budget.hard_limit_micro_usd // 200
        self.budgets = budgets
        self.wake()

    def charge(self, *, route: str, tenant: str, user: str) -> Charge | None:
        """The budgets a request is in; None when there are none (the common, cheapest case)."""
        if not self.budgets:
            return None
        budgets = matching_budgets(list(self.budgets.values()), route=route, tenant=tenant, user=user)
        if not budgets:
            return None
        downgrade = None
        for budget in budgets:
            if self.state(budget) == pb.BUDGET_STATE_SOFT_LIMITED:
                which = budget.WhichOneof("downgrade_to")
                if which == "downgrade_tier":
                    downgrade = Downgrade(budget.name, tier=budget.downgrade_tier)
                elif which == "downgrade_backend":
                    downgrade = Downgrade(budget.name, backend=budget.downgrade_backend)
                if downgrade is not None:
                    break
        return Charge(self, budgets, downgrade)

    def state(self, budget: pb.Budget) -> int:
        """The freshest knowledge: the source's own count, else the newer of config and last grant."""
        local = self.source.current_state(budget)
        if local is not None:
            return local
        wallet = self.wallets.get(budget.name)
        if wallet is not None and wallet.state_at > self._config_at and wallet.state:
            return wallet.state
        return budget.state or pb.BUDGET_STATE_NORMAL

    def reset_at(self, budget: pb.Budget) -> str:
        instant = self.source.reset_at(budget)
        if instant is None and budget.HasField("period_end"):
            instant = budget.period_end.ToDatetime(tzinfo=UTC)
        return instant.astimezone(UTC).isoformat().replace("+00:00", "Z") if instant else ""

    # -- the request path ---------------------------------------------------------------------------

    async def reserve(self, budgets: Sequence[pb.Budget], amount: int) -> Reservation | BudgetRefusal:
        reservation = Reservation(self, budgets=tuple(budgets))
        if amount <= 0:
            return reservation  # a free backend spends nothing: no allowance needed
        for budget in budgets:
            refusal = await self._reserve_one(budget, amount, reservation)
            if refusal is not None:
                reservation.release()
                return refusal
        return reservation

    async def _reserve_one(
        self, budget: pb.Budget, amount: int, reservation: Reservation
    ) -> BudgetRefusal | None:
        wallet = self.wallets.get(budget.name)
        if wallet is None:
            return None
        if self.state(budget) == pb.BUDGET_STATE_EXHAUSTED:
            self.listener("refused", budget.name)
            return BudgetRefusal(budget.name, self.reset_at(budget), "its hard limit is reached")
        late = False
        if not wallet.try_reserve(amount, self.clock()):
            if budget.name not in self._unreachable and not wallet.exhausted:
                # Rare: the background top-up did not keep ahead (a burst, or the first request).
                # Counted, so a benchmark can show renewals stay off the request path.
                self.listener("urgent", budget.name)
                try:
                    await asyncio.wait_for(self._topup(budget, wallet, amount), _URGENT_WAIT)
                except TimeoutError:
                    late = True
            if not wallet.try_reserve(amount, self.clock()):
                if budget.name in self._unreachable and budget.failure_mode == pb.BUDGET_FAILURE_MODE_OPEN:
                    self.listener("fail_open", budget.name)
                    return None  # admitted; its usage is buffered and counted when the operator is back
                self.listener("refused", budget.name)
                if budget.name in self._unreachable:
                    reason = (
                        "the sidecar spent the allowance it holds and cannot reach the operator for more "
                        "(failureMode: closed)"
                    )
                elif late:
                    reason = "the operator did not grant allowance for this request in time; retry"
                else:
                    reason = "not enough of it is left for this request's estimated cost"
                return BudgetRefusal(budget.name, self.reset_at(budget), reason)
        reservation.amounts.append((wallet, amount))
        return None

    # -- top-ups ------------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _topup(self, budget: pb.Budget, wallet: Wallet, extra: int = 0) -> None:
        now = self.clock()
        amount = wallet.topup_amount(now) + extra
        try:
            if wallet.lease_id and not wallet.orphaned:
                try:
                    grant = await self.source.renew(budget, wallet.lease_id, wallet.spent, amount)
                except LeaseGone:
                    # The granting side forgot the lease (an operator restart). What it granted stays
                    # ours to spend until it expires, as the new operator assumes: it waits that long
                    # before granting again. Until a new lease arrives, keep spending the old one.
                    wallet.orphaned = True
                    grant = await self.source.lease(budget, amount)
            else:
                grant = await self.source.lease(budget, amount)
        except Unreachable as exc:
            if budget.name not in self._unreachable:
                log.warning("budget %s: cannot top up its allowance: %s", budget.name, exc)
                self.listener("unreachable", budget.name)
            self._unreachable.add(budget.name)
            return
        self._unreachable.discard(budget.name)
        wallet.apply(grant, self.clock())
        self.listener("topup", budget.name)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _TICK)
            self._wake.clear()
            for name, wallet in list(self.wallets.items()):
                budget = self.budgets.get(name)
                if budget is None or not wallet.wants_topup(self.clock()):
                    continue
                try:
                    await self._topup(budget, wallet)
                except Exception:
                    log.exception("budget %s: top-up failed", name)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for name, wallet in self.wallets.items():
            if wallet.lease_id and name in self.budgets:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self.source.give_back(self.budgets[name], wallet.lease_id, wallet.spent), 1.0
                    )
