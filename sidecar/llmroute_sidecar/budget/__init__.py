"""Budgets in the sidecar's request path: scope, wallets of leased allowance, downgrades."""

from .guard import BudgetGuard, BudgetRefusal, Charge, Downgrade, Reservation
from .scope import in_scope, matching_budgets
from .source import AllowanceSource, LeaseGone, LocalSource, Unreachable
from .wallet import Grant, Wallet

__all__ = [
    "AllowanceSource",
    "BudgetGuard",
    "BudgetRefusal",
    "Charge",
    "Downgrade",
    "Grant",
    "LeaseGone",
    "LocalSource",
    "Reservation",
    "Unreachable",
    "Wallet",
    "in_scope",
    "matching_budgets",
]
