"""The per-sidecar discovery state machine: ACK, NACK, backpressure, coalescing, stale nonces."""

from __future__ import annotations

from llmroute_operator.configserver.auth import Identity
from llmroute_operator.configserver.sessions import Answer, Session
from llmroute_proto.v1 import config_pb2 as pb
from llmroute_proto.v1 import discovery_pb2 as dpb

WHO = Identity(namespace="a", service_account="sa", pod_name="p", pod_uid="u")


def config(version: str, *routes: str) -> pb.RouterConfig:
    return pb.RouterConfig(version=version, namespace="a", routes=[pb.Route(name=r) for r in routes])


def session(running: str = "") -> Session:
    s = Session(id="s1", identity=WHO)
    s.hello(dpb.ConfigRequest(node=dpb.Node(id="n1"), version_info=running))
    return s


def ack(nonce: str, version: str) -> dpb.ConfigRequest:
    return dpb.ConfigRequest(version_info=version, response_nonce=nonce)


def nack(nonce: str, running: str, message: str = "bad") -> dpb.ConfigRequest:
    return dpb.ConfigRequest(
        version_info=running, response_nonce=nonce, error_detail=dpb.ErrorDetail(code=3, message=message)
    )


def test_first_push_then_ack() -> None:
    s = session()
    push = s.offer(config("v1", "chat"), changed_at=1.0)
    assert push is not None and push.version == "v1" and push.response().nonce == push.nonce
    assert not s.synced
    outcome, nxt = s.answer(ack(push.nonce, "v1"))
    assert outcome is Answer.ACK and nxt is None
    assert s.synced and s.acked_version == "v1" and s.acks == 1


def test_a_sidecar_already_running_the_version_gets_nothing() -> None:
    s = session(running="v1")
    assert s.offer(config("v1", "chat"), changed_at=0.0) is None
    assert s.synced


def test_no_op_recompile_pushes_nothing() -> None:
    s = session()
    push = s.offer(config("v1"), 0.0)
    assert push is not None
    s.answer(ack(push.nonce, "v1"))
    assert s.offer(config("v1"), 1.0) is None


def test_backpressure_coalesces_to_the_newest_version() -> None:
    s = session()
    first = s.offer(config("v1"), 0.0)
    assert first is not None
    # While v1 is unanswered, v2 and v3 arrive: nothing is sent.
    assert s.offer(config("v2"), 1.0) is None
    assert s.offer(config("v3"), 2.0) is None
    outcome, nxt = s.answer(ack(first.nonce, "v1"))
    assert outcome is Answer.ACK
    assert nxt is not None and nxt.version == "v3" and nxt.nonce != first.nonce  # v2 was skipped
    assert nxt.changed_at == 2.0
    _, last = s.answer(ack(nxt.nonce, "v3"))
    assert last is None and s.synced


def test_nack_keeps_running_version_and_is_not_resent() -> None:
    s = session()
    good = s.offer(config("v1", "chat"), 0.0)
    assert good is not None
    s.answer(ack(good.nonce, "v1"))
    bad = s.offer(config("v2", "chat"), 1.0)
    assert bad is not None
    outcome, nxt = s.answer(nack(bad.nonce, "v1", "backend 'x' has no credentials"))
    assert outcome is Answer.NACK and nxt is None
    assert s.acked_version == "v1" and s.nacks == 1
    assert s.rejected("chat") and not s.rejected("other")
    assert "no credentials" in s.rejected_message
    # The same content again (an unrelated recompile) is not pushed again...
    assert s.offer(config("v2", "chat"), 2.0) is None
    # ...a fix is, and its ACK clears the rejection.
    fix = s.offer(config("v3", "chat"), 3.0)
    assert fix is not None
    s.answer(ack(fix.nonce, "v3"))
    assert not s.rejected("chat") and s.synced


def test_rolling_back_to_the_running_version_after_a_nack_needs_no_push() -> None:
    s = session(running="v1")
    bad = s.offer(config("v2"), 0.0)
    assert bad is not None
    s.answer(nack(bad.nonce, "v1"))
    assert s.offer(config("v1"), 1.0) is None
    assert s.synced


def test_stale_or_unknown_nonce_is_ignored() -> None:
    s = session()
    push = s.offer(config("v1"), 0.0)
    assert push is not None
    assert s.answer(ack("not-the-nonce", "v1")) == (Answer.STALE, None)
    assert s.in_flight is push
    assert s.answer(ack(push.nonce, "v1"))[0] is Answer.ACK
    assert s.answer(ack(push.nonce, "v1")) == (Answer.STALE, None)  # a duplicate answer
