"""Which budgets a request is charged to: every ``Budget`` of the config whose scope it satisfies.

A scope's set fields must all hold (the compiler sets at least one): the route is among ``routes``,
the tenant (x-llmroute-tenant) among ``tenants``, the user (x-llmroute-user, else the OpenAI ``user``
field) among ``users``; ``namespace`` alone matches every request of the sidecar's namespace. Pure;
``guard.py`` calls it once per request. The operator applies the same rule to usage records
(``llmroute_operator.budgets.service``), so what a sidecar refuses and what the operator counts agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmroute_proto.v1 import config_pb2 as pb

__all__ = ["in_scope", "matching_budgets"]


def in_scope(scope: pb.BudgetScope, *, route: str, tenant: str, user: str) -> bool:
    if scope.routes and route not in scope.routes:
        return False
    if scope.tenants and tenant not in scope.tenants:
        return False
    if scope.users and user not in scope.users:
        return False
    return bool(scope.routes or scope.tenants or scope.users or scope.namespace)


def matching_budgets(
    budgets: Sequence[pb.Budget], *, route: str, tenant: str, user: str
) -> tuple[pb.Budget, ...]:
    return tuple(b for b in budgets if in_scope(b.scope, route=route, tenant=tenant, user=user))
