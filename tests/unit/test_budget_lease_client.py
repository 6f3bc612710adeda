"""The sidecar's allowance client (``budget/lease_client.py``) with a faked gRPC stub: a call its
channel cancelled is an unreachable operator; a cancellation of the caller's task stays one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.budget.lease_client import OperatorSource
from llmroute_sidecar.budget.source import Unreachable


class _Stub:
    """Each method raises what grpc.aio raises for a call cancelled by its channel, or hangs."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang

    def __getattr__(self, method: str) -> Any:
        async def call(request: Any, **kwargs: Any) -> Any:
            if self.hang:
                await asyncio.sleep(3600)
            raise asyncio.CancelledError()  # the channel closed under the call

        return call


def _source(stub: _Stub) -> OperatorSource:
    source = OperatorSource(sidecar_id="s-1")
    source._stub = stub
    return source


async def test_a_call_cancelled_by_its_channel_is_unreachable_not_a_cancellation() -> None:
    source = _source(_Stub())
    with pytest.raises(Unreachable, match="channel"):
        await source.lease(pb.Budget(name="b"), 100)
    await source.give_back(pb.Budget(name="b"), "lease-1", 5)  # logged, not raised


async def test_cancelling_the_caller_still_cancels() -> None:
    task = asyncio.create_task(_source(_Stub(hang=True)).lease(pb.Budget(name="b"), 100))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
