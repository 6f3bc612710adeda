"""One budget's allowance as a sidecar holds it: what was granted, spent and reserved. Pure.

A request in scope of a budget with a hard limit is admitted only when the wallet can *reserve* its
estimated cost (prompt tokens plus the output budget, priced by the backend it is about to try).
When the answer is in, the reservation is *settled* with the actual cost, so the allowance gets the
difference back; a failed attempt *releases* its reservation. Because only reserved money is spent,
a sidecar can exceed what it was granted by at most the error of one request's estimate, which is
the overshoot design.md allows per sidecar.

The wallet also decides when to ask for more (``wants_topup``), ahead of need: when what is left
falls below a few requests' worth or below a few seconds of the recent spend rate, or the lease is
about to expire. ``guard.py`` runs the top-ups in the background, off the request path.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmroute_proto.v1 import config_pb2 as pb

__all__ = ["Grant", "Wallet"]

# Ask for this many seconds of spend at the recent rate, and at least this many requests' worth.
_HORIZON_SECONDS = 5.0
_MIN_REQUESTS = 4
# Renew once less than this share of the lease's lifetime is left.
_RENEW_AT_LIFETIME = 0.5


@dataclass(frozen=True)
class Grant:
    """An Allowances answer (LeaseGrant) in the sidecar's terms."""

    lease_id: str
    granted: int  # cumulative micro-USD granted on this lease
    expires_in: float  # seconds from now; inf for a standalone sidecar's own count
    state: int  # pb.BudgetState, as the granting side sees it now


@dataclass
class Wallet:
    budget: str
    lease_id: str = ""
    granted: int = 0
    spent: int = 0  # settled on this lease
    reserved: int = 0  # held by requests in flight
    expires_at: float = 0.0  # clock seconds; 0: no lease
    lease_seconds: float = 0.0  # lifetime of the last grant, to renew half-way
    state: int = pb.BUDGET_STATE_NORMAL  # from the last grant
    state_at: float = float("-inf")  # when ``state`` was learned
    largest_estimate: int = 0  # of recent reservations, for sizing top-ups
    rate: float = 0.0  # recent spend, micro-USD per second (exponentially decaying)
    _rate_at: float = 0.0
    exhausted: bool = False  # the granting side had nothing left on the last ask
    orphaned: bool = False  # the granting side no longer knows this lease; spend it out, lease anew
    floor: int = 0  # smallest amount worth holding (a share of the hard limit), for the first lease

    def available(self, now: float) -> int:
        if not self.lease_id or now >= self.expires_at:
            return 0
        return max(0, self.granted - self.spent - self.reserved)

    def try_reserve(self, amount: int, now: float) -> bool:
        # The largest recent estimate sizes top-ups; it decays, so one huge request does not make
        # this sidecar hoard allowance other sidecars could spend.
        self.largest_estimate = max(amount, self.largest_estimate * 99 // 100)
        if amount > self.available(now):
            return False
        self.reserved += amount
        return True

    def release(self, amount: int) -> None:
        self.reserved = max(0, self.reserved - amount)

    def settle(self, reserved: int, actual: int, now: float) -> None:
        self.release(reserved)
        self.spent += max(0, actual)
        self._observe_rate(max(0, actual), now)

    def _observe_rate(self, micro: int, now: float) -> None:
        # A decaying average with a 10 s time constant: reacts to a burst within a second or two.
        elapsed = max(0.0, now - self._rate_at)
        decay = 0.5 ** (elapsed / 10.0)
        self.rate = self.rate * decay + micro / 10.0
        self._rate_at = now

    def target(self) -> int:
        """How much it should hold unreserved after a top-up."""
        return max(int(self.rate * _HORIZON_SECONDS), _MIN_REQUESTS * self.largest_estimate, self.floor, 1)

    def wants_topup(self, now: float) -> bool:
        if not self.lease_id or self.orphaned:
            return True
        if now >= self.expires_at - self.lease_seconds * _RENEW_AT_LIFETIME:
            return True
        return not self.exhausted and self.available(now) < self.target() // 2

    def topup_amount(self, now: float) -> int:
        return max(0, self.target() - self.available(now))

    def apply(self, grant: Grant, now: float) -> None:
        previous = self.granted if grant.lease_id == self.lease_id else 0
        if not grant.lease_id and self.orphaned and self.available(now) > 0:
            self.state, self.state_at = grant.state, now
            return  # nothing new granted: keep spending what the forgotten lease still holds
        if grant.lease_id != self.lease_id:
            # A new lease: what was spent on the old one is history (reported through usage records).
            self.lease_id, self.spent = grant.lease_id, 0
            self.orphaned = False
        self.granted = grant.granted
        self.lease_seconds = grant.expires_in
        self.expires_at = now + grant.expires_in if grant.lease_id else 0.0
        self.state, self.state_at = grant.state, now
        # Nothing more was granted and what is left does not cover a request: stop asking every tick
        # (a config push or a period roll-over resets this).
        self.exhausted = grant.granted <= previous and self.available(now) < max(1, self.largest_estimate)
