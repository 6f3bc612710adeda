"""Allowance from the operator: the ``llmroute.v1.Allowances`` client a connected sidecar uses.

:class:`OperatorSource` implements ``source.AllowanceSource``. ``operator_client.py`` hands it the
live channel and the token metadata when a session is accepted (:meth:`attach`) and takes them away
when the connection drops (:meth:`detach`); while detached every call raises :class:`Unreachable`
at once, so the guard falls back on what its wallets hold and then on the budget's failureMode.
Request ids make Lease and Renew safe to retry. Loads grpc: operator mode only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc

from llmroute_proto.v1 import allowance_pb2 as apb
from llmroute_proto.v1 import allowance_pb2_grpc as apb_grpc
from llmroute_proto.v1 import config_pb2 as pb

from .source import LeaseGone, Unreachable
from .wallet import Grant

__all__ = ["OperatorSource"]

log = logging.getLogger(__name__)
_CALL_TIMEOUT = 2.0


class OperatorSource:
    def __init__(self, *, sidecar_id: str) -> None:
        self.sidecar_id = sidecar_id
        self._stub: Any = None
        self._metadata: tuple[tuple[str, str], ...] = ()

    def attach(self, channel: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = apb_grpc.AllowancesStub(channel)
        self._metadata = metadata

    def detach(self) -> None:
        self._stub = None

    @property
    def attached(self) -> bool:
        return self._stub is not None

    async def _call(self, method: str, request: Any) -> Any:
        stub = self._stub
        if stub is None:
            raise Unreachable("not connected to the operator")
        try:
            return await getattr(stub, method)(request, metadata=self._metadata, timeout=_CALL_TIMEOUT)
        except asyncio.CancelledError:
            # grpc.aio raises CancelledError for a call its channel cancelled (the operator client
            # closes its channel to reconnect): that is an unreachable operator, not a cancellation of
            # this task, which must not escape into callers that never cancelled anything.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise Unreachable(f"{method}: cancelled by a channel closing") from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and method == "Renew":
                raise LeaseGone(exc.details() or "") from exc
            raise Unreachable(f"{method}: {exc.code().name}: {exc.details()}") from exc

    @staticmethod
    def _grant(answer: apb.LeaseGrant) -> Grant:
        expires_in = 0.0
        if answer.lease_id and answer.HasField("expires_at"):
            expires_at = answer.expires_at.ToDatetime(tzinfo=UTC)
            # The operator's instant, as seconds from now: clocks in a cluster agree to well under a
            # lease's lifetime, and a second of safety margin covers the rest.
            expires_in = max(0.0, (expires_at - datetime.now(UTC)).total_seconds() - 1.0)
        return Grant(
            lease_id=answer.lease_id,
            granted=answer.granted_micro_usd,
            expires_in=expires_in if answer.lease_id else math.inf,
            state=answer.state,
        )

    async def lease(self, budget: pb.Budget, amount: int) -> Grant:
        answer = await self._call(
            "Lease",
            apb.LeaseRequest(
                sidecar_id=self.sidecar_id,
                budget=budget.name,
                requested_micro_usd=amount,
                request_id=uuid.uuid4().hex,
            ),
        )
        return self._grant(answer)

    async def renew(self, budget: pb.Budget, lease_id: str, spent: int, amount: int) -> Grant:
        answer = await self._call(
            "Renew",
            apb.RenewRequest(
                sidecar_id=self.sidecar_id,
                lease_id=lease_id,
                spent_micro_usd=spent,
                requested_micro_usd=amount,
                request_id=uuid.uuid4().hex,
            ),
        )
        return self._grant(answer)

    async def give_back(self, budget: pb.Budget, lease_id: str, spent: int) -> None:
        try:
            await self._call(
                "Return",
                apb.ReturnRequest(sidecar_id=self.sidecar_id, lease_id=lease_id, spent_micro_usd=spent),
            )
        except Unreachable as exc:
            log.info("returning lease %s of budget %s failed: %s", lease_id, budget.name, exc)

    def observe(self, budget: pb.Budget, micro: int) -> None:
        return None  # the operator counts usage records

    def current_state(self, budget: pb.Budget) -> int | None:
        return None

    def reset_at(self, budget: pb.Budget) -> datetime | None:
        return None
