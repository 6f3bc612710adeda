"""What the config server refuses before the hub or the budget service see a message.

A sidecar's token proves which Pod is calling (``auth.py``); this module checks what that Pod then
*says*, so a compromised or broken sidecar cannot disturb the operator or anyone else's spend:

- bytes that are not the method's protobuf: INVALID_ARGUMENT (:class:`ParseGuard`, a server
  interceptor; without it gRPC answers UNKNOWN, "Unexpected DecodeError"). Messages over
  :data:`MAX_MESSAGE_BYTES` never get here: gRPC refuses them with RESOURCE_EXHAUSTED (``server.py``
  sets the limit);
- a ``sidecar_id`` that names another Pod: PERMISSION_DENIED. Sidecars name themselves
  ``<pod name>-<random>`` (``sidecar-<random>`` when the pod name is unknown), and the operator keys
  their usage de-duplication and leases by (namespace, pod uid, sidecar id), so another pod's id
  would not reach its books anyway; the refusal makes the lie visible instead of silently accepted;
- a budget or route named with a namespace (``team-b/x``): PERMISSION_DENIED. Names are always
  relative to the caller's verified namespace (a plain name of another namespace's budget is looked
  up, and not found, in the caller's own);
- numbers no sidecar produces: a negative or absurd cost, sequence 0 (sequences start at 1), negative
  lease amounts: INVALID_ARGUMENT. Token counts are not counted by the operator, so any uint64 is
  harmless; the schema has no floating-point fields, so there is no NaN to send.

The checks are pure (:class:`Refusal` carries a ``grpc.StatusCode`` name); ``server.py`` maps them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from llmroute_proto.v1 import allowance_pb2 as apb
from llmroute_proto.v1 import usage_pb2 as upb

from .auth import Identity

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_RECORD_COST_MICRO",
    "ParseGuard",
    "Refusal",
    "check_lease_call",
    "check_sidecar_id",
    "check_usage_batch",
]

log = logging.getLogger(__name__)

# A full usage batch (500 records) is ~250 KB; a ConfigRequest a few KB. 16x headroom, and what gRPC
# uses by default, now written down so it cannot drift.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# One request costing a million dollars is not a request; it would only be a way to exhaust a budget
# (or, near 2**63, to break arithmetic downstream).
MAX_RECORD_COST_MICRO = 10**12
_FALLBACK_PREFIX = "sidecar-"  # NodeInfo.from_env without POD_NAME


class Refusal(Exception):
    """A message the server refuses; ``code`` names a ``grpc.StatusCode``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_sidecar_id(identity: Identity, sidecar_id: str) -> None:
    if not sidecar_id:
        raise Refusal("INVALID_ARGUMENT", "sidecar_id is required")
    pod = identity.pod_name
    if sidecar_id == pod or sidecar_id.startswith(f"{pod}-") or sidecar_id.startswith(_FALLBACK_PREFIX):
        return
    raise Refusal(
        "PERMISSION_DENIED",
        f"sidecar_id {sidecar_id[:80]!r} does not belong to {identity}: use '{pod}-<suffix>'",
    )


def _check_name(identity: Identity, kind: str, name: str) -> None:
    if "/" in name:
        raise Refusal(
            "PERMISSION_DENIED",
            f"{kind} {name[:80]!r} names a namespace; {kind}s are named within the caller's namespace "
            f"{identity.namespace}",
        )


def check_usage_batch(identity: Identity, batch: upb.UsageBatch, *, sidecar_id: str) -> None:
    """One batch of a usage stream whose first batch named ``sidecar_id``."""
    if batch.sidecar_id != sidecar_id:
        raise Refusal("INVALID_ARGUMENT", "a usage stream carries one sidecar_id")
    check_sidecar_id(identity, batch.sidecar_id)
    if batch.sequence < 1:
        raise Refusal("INVALID_ARGUMENT", "UsageBatch.sequence starts at 1")
    for record in batch.records:
        if not 0 <= record.cost_micro_usd <= MAX_RECORD_COST_MICRO:
            raise Refusal(
                "INVALID_ARGUMENT",
                f"record {record.request_id[:80]!r}: cost_micro_usd {record.cost_micro_usd} is outside "
                f"0..{MAX_RECORD_COST_MICRO}",
            )
        _check_name(identity, "route", record.route)
        for budget in record.budgets:
            _check_name(identity, "budget", budget)


def check_lease_call(
    identity: Identity, request: apb.LeaseRequest | apb.RenewRequest | apb.ReturnRequest
) -> None:
    check_sidecar_id(identity, request.sidecar_id)
    if isinstance(request, apb.LeaseRequest):
        _check_name(identity, "budget", request.budget)
    for field in ("requested_micro_usd", "spent_micro_usd"):
        if getattr(request, field, 0) < 0:
            raise Refusal("INVALID_ARGUMENT", f"{field} must not be negative")


class _Malformed:
    """What the guarded deserializer returns for bytes that do not parse."""

    def __init__(self, error: str) -> None:
        self.error = error


_SERVICES = {
    "ConfigDiscovery": "config",
    "UsageReporting": "usage",
    "Allowances": "allowance",
    "Peers": "peers",
}


class RefusalObserver(Protocol):
    def refused(self, call: str, code: str) -> None: ...


class ParseGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Turns undecodable requests into INVALID_ARGUMENT, on every method of the server."""

    def __init__(self, observer: RefusalObserver) -> None:
        self._observer = observer

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        service, _, method = str(details.method).strip("/").partition("/")
        call = _SERVICES.get(service.rpartition(".")[2], "other")
        parse = handler.request_deserializer

        def deserialize(data: bytes) -> Any:
            try:
                return parse(data)
            except (DecodeError, ValueError, TypeError) as exc:
                return _Malformed(str(exc))

        async def refuse(context: Any, bad: _Malformed) -> None:
            log.info("refused a malformed %s message from %s: %s", method, context.peer(), bad.error)
            self._observer.refused(call, "INVALID_ARGUMENT")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method} request: {bad.error}")

        def checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async def gen() -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, _Malformed):
                        await refuse(context, request)
                    yield request

            return gen()

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                if isinstance(request, _Malformed):
                    await refuse(context, request)
                return await inner(request, context)

            return handler._replace(request_deserializer=deserialize, unary_unary=unary_unary)
        if handler.stream_stream is not None:
            stream = handler.stream_stream

            # An async generator function itself: gRPC picks how to run a handler by its kind.
            async def stream_stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
                async for response in stream(checked(requests, context), context):
                    yield response

            return handler._replace(request_deserializer=deserialize, stream_stream=stream_stream)
        return handler  # no unary-stream or stream-unary methods on this server
