"""Allowance leases of one budget, pure: how a hard limit holds across every sidecar together.

A sidecar spends only allowance it holds. The book grants at most what remains under the hard limit
after counted spend and after what leases still reserve::

    available = max(0, remaining - outstanding)          remaining = hard limit - counted spend
    outstanding = sum of every lease's reserve

A lease reserves money until its spend is *counted*, i.e. has arrived as usage records (``observe``)
and raised the ledger's spend; what the sidecar merely *reports* (Renew/Return) does not release the
reserve, because that spend is not in the ledger yet and must not be granted again meanwhile:

- a live lease reserves ``granted - observed``;
- a returned lease keeps reserving ``min(granted, reported) - observed`` (spend reported but not yet
  counted) for ``grace``, then is dropped;
- a lease past ``expires_at`` (the sidecar must not spend from it any more) is dropped ``grace`` later.

``grace`` is the time usage records get to arrive; it is the assumption the bound rests on.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["Lease", "LeaseBook"]


@dataclass
class Lease:
    id: str
    owner: str  # the sidecar (namespace, pod uid, sidecar id), flattened
    granted: int  # cumulative micro-USD the sidecar may spend from this lease
    expires_at: datetime
    reported: int = 0  # spend the sidecar reported (Renew/Return)
    observed: int = 0  # spend counted from its usage records
    returned_at: datetime | None = None

    @property
    def reserve(self) -> int:
        """Money this lease still holds back from new grants."""
        ceiling = self.granted if self.returned_at is None else min(self.granted, self.reported)
        return max(0, ceiling - self.observed)

    @property
    def unspent(self) -> int:
        """What the sidecar may still spend (or gave back), by the larger of both counts."""
        return max(0, self.granted - max(self.reported, self.observed))


@dataclass
class LeaseBook:
    ttl: timedelta = timedelta(seconds=20)
    grace: timedelta = timedelta(seconds=5)
    leases: dict[str, Lease] = field(default_factory=dict)  # in creation order

    @property
    def outstanding(self) -> int:
        return sum(lease.reserve for lease in self.leases.values())

    def available(self, remaining: int) -> int:
        return max(0, remaining - self.outstanding)

    def grant(self, owner: str, requested: int, remaining: int, now: datetime) -> Lease | None:
        """A new lease of up to ``requested``; None when nothing is available."""
        amount = min(max(0, requested), self.available(remaining))
        if amount <= 0:
            return None
        lease = Lease(id=secrets.token_hex(8), owner=owner, granted=amount, expires_at=now + self.ttl)
        self.leases[lease.id] = lease
        return lease

    def get(self, lease_id: str, owner: str) -> Lease | None:
        """A live lease of ``owner``."""
        lease = self.leases.get(lease_id)
        if lease is None or lease.owner != owner or lease.returned_at is not None:
            return None
        return lease

    def renew(self, lease: Lease, spent: int, requested: int, remaining: int, now: datetime) -> Lease:
        """Record reported spend, extend, and top up by up to ``requested``."""
        lease.reported = max(lease.reported, spent)
        lease.granted += min(max(0, requested), self.available(remaining))
        lease.expires_at = now + self.ttl
        return lease

    def release(self, lease: Lease, spent: int, now: datetime) -> int:
        """End ``lease``; returns the unspent part credited back."""
        lease.reported = max(lease.reported, spent)
        lease.returned_at = now
        if lease.reserve == 0:
            del self.leases[lease.id]
        return lease.unspent

    def observe(self, owner: str, micro: int) -> None:
        """``owner`` spent ``micro`` in this budget (counted usage): charge its leases, oldest first."""
        for lease in list(self.leases.values()):
            if micro <= 0:
                return
            if lease.owner == owner:
                take = min(lease.granted - lease.observed, micro)
                lease.observed += take
                micro -= take
                if lease.returned_at is not None and lease.reserve == 0:
                    del self.leases[lease.id]

    def expire(self, now: datetime) -> None:
        """Drop leases whose usage has had ``grace`` to arrive."""
        for lease in list(self.leases.values()):
            ended = (
                lease.expires_at if lease.returned_at is None else min(lease.expires_at, lease.returned_at)
            )
            if ended + self.grace <= now:
                del self.leases[lease.id]
