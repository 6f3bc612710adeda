"""Leader election on a Lease (``leadership.py``) and the peers' route sync counts (``peers.py``).

The election runs against an in-memory stand-in for the Lease endpoint that enforces
``resourceVersion`` the way the API server does (a stale write is a 409), so two candidates racing
for one Lease are exercised here; the e2e tier runs it on a real API server.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import pytest

from llmroute_operator.configserver.forward import (
    FORWARDED,
    LeaderLink,
    NoLeader,
    forwarded,
    forwarding_metadata,
)
from llmroute_operator.configserver.peers import MergedSync, PeerSyncBook, merge
from llmroute_operator.contracts import RouteSync
from llmroute_operator.kube import KubeError, NotFoundError
from llmroute_operator.leadership import Action, Leadership, LeaseRecord, decide, lease_body, parse_lease
from llmroute_operator.metrics import OperatorMetrics
from llmroute_operator.settings import OperatorSettings
from llmroute_proto.v1 import peers_pb2 as ppb

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


# -- the rule -------------------------------------------------------------------------------------------


def test_decide() -> None:
    held = LeaseRecord(holder="b", duration=15, renew_time="t")
    assert decide(None, identity="a", observed_age=0) is Action.CREATE
    assert decide(held, identity="b", observed_age=100) is Action.RENEW
    assert decide(held, identity="a", observed_age=14.9) is Action.FOLLOW
    assert decide(held, identity="a", observed_age=15.1) is Action.ACQUIRE  # expired on our clock
    assert decide(LeaseRecord(holder=""), identity="a", observed_age=0) is Action.ACQUIRE  # released


def test_lease_body_counts_transitions_and_keeps_the_acquire_time() -> None:
    first = lease_body(
        name="l", namespace="ns", holder="a", address="10.0.0.1:14100", duration=15, now=NOW, previous=None
    )
    assert first["spec"]["holderIdentity"] == "a" and first["spec"]["leaseTransitions"] == 0
    assert first["metadata"]["annotations"]["llmroute.io/peer-address"] == "10.0.0.1:14100"
    assert "resourceVersion" not in first["metadata"]
    record = parse_lease({**first, "metadata": {**first["metadata"], "resourceVersion": "7"}})
    renewed = lease_body(
        name="l", namespace="ns", holder="a", address="x", duration=15,
        now=NOW + dt.timedelta(seconds=2), previous=record,
    )  # fmt: skip
    assert renewed["metadata"]["resourceVersion"] == "7"
    assert renewed["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert renewed["spec"]["renewTime"] != first["spec"]["renewTime"]
    assert renewed["spec"]["leaseTransitions"] == 0
    taken = lease_body(
        name="l", namespace="ns", holder="b", address="y", duration=15, now=NOW, previous=record
    )
    assert taken["spec"]["leaseTransitions"] == 1


def test_parse_lease_tolerates_missing_and_odd_fields() -> None:
    record = parse_lease({"spec": {"leaseDurationSeconds": "x", "leaseTransitions": None}})
    assert record == LeaseRecord(duration=15.0)


# -- the election, against an API stand-in ---------------------------------------------------------------


class FakeLeases:
    """One Lease endpoint with optimistic concurrency, like the API server's."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.version = 0
        self.fail = False

    async def get(self, path: str) -> dict[str, Any]:
        if self.fail:
            raise KubeError("connection refused", status=0)
        if self.obj is None:
            raise NotFoundError("not found", status=404)
        return copy.deepcopy(self.obj)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.obj = copy.deepcopy(body)
        self.obj["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.obj)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail:
            raise KubeError("connection refused", status=0)
        if self.obj is not None:
            raise KubeError("exists", status=409)
        return self._store(body)

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail:
            raise KubeError("connection refused", status=0)
        assert self.obj is not None
        if body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]:
            raise KubeError("conflict", status=409)
        return self._store(body)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _candidate(api: FakeLeases, name: str, clock: Clock, events: list[str]) -> Leadership:
    settings = OperatorSettings(lease_duration=15, renew_deadline=10, lease_retry=2)
    lead = Leadership(
        settings=settings,
        kube=api,  # type: ignore[arg-type]  # the stand-in has the four calls Leadership makes
        identity=name,
        address=f"{name}:14100",
        metrics=OperatorMetrics(),
        clock=clock,
    )

    async def record(leading: bool) -> None:
        events.append(f"{name} {'leads' if leading else 'follows'}")

    lead.on_change(record)
    return lead


async def test_one_candidate_wins_and_the_other_follows_its_address() -> None:
    api, clock, events = FakeLeases(), Clock(), []
    a, b = _candidate(api, "a", clock, events), _candidate(api, "b", clock, events)
    await a.step()
    await b.step()
    assert (a.leader, b.leader) == (True, False)
    assert b.leader_identity == "a" and b.leader_address == "a:14100"
    term = b.term
    clock.now += 2
    await a.step()  # renews
    clock.now += 14
    await b.step()  # a renewed 14 s ago on b's clock: still valid
    assert not b.leader and b.term == term
    assert events == ["a leads"]


async def test_a_stale_holder_is_replaced_and_steps_down_when_it_reads_so() -> None:
    api, clock, events = FakeLeases(), Clock(), []
    a, b = _candidate(api, "a", clock, events), _candidate(api, "b", clock, events)
    await a.step()
    await b.step()
    clock.now += 16  # a stopped renewing (say it hangs): b's observation expires
    await b.step()
    assert b.leader and b.leader_address == "b:14100"
    assert api.obj is not None and api.obj["spec"]["leaseTransitions"] == 1
    await a.step()  # a wakes up, reads b as the holder
    assert not a.leader and a.leader_identity == "b"
    assert events == ["a leads", "b leads", "a follows"]


async def test_the_leader_steps_down_when_it_cannot_renew_within_the_deadline() -> None:
    api, clock, events = FakeLeases(), Clock(), []
    a = _candidate(api, "a", clock, events)
    await a.step()
    api.fail = True
    clock.now += 9
    await a.step()
    assert a.leader  # within renew_deadline: keep leading through an API hiccup
    clock.now += 2
    await a.step()
    assert not a.leader and a.leader_address == ""
    assert events == ["a leads", "a follows"]


async def test_two_candidates_racing_for_a_released_lease_produce_one_leader() -> None:
    api, clock, events = FakeLeases(), Clock(), []
    a, b, c = (_candidate(api, n, clock, events) for n in "abc")
    await a.step()
    await b.step()
    await c.step()
    await a.release()
    assert not a.leader and api.obj is not None and api.obj["spec"]["holderIdentity"] == ""
    await asyncio.gather(b.step(), c.step())
    assert [b.leader, c.leader].count(True) == 1
    await asyncio.gather(b.step(), c.step())
    assert [b.leader, c.leader].count(True) == 1
    winner, loser = (b, c) if b.leader else (c, b)
    assert loser.leader_identity == winner.identity


async def test_wait_change_wakes_on_a_new_leader() -> None:
    api, clock, events = FakeLeases(), Clock(), []
    a, b = _candidate(api, "a", clock, events), _candidate(api, "b", clock, events)
    waiter = asyncio.create_task(b.wait_change(b.term))
    await a.step()
    await b.step()
    assert await asyncio.wait_for(waiter, 1) == b.term


# -- peers' route sync counts ----------------------------------------------------------------------------


def test_merge_sums_counts_and_takes_the_version_most_sidecars_run() -> None:
    merged = merge(
        [
            RouteSync(matched=2, synced=2, version="v2"),
            RouteSync(matched=3, synced=1, rejected=1, version="v1", errors=("bad",)),
            RouteSync(),
        ]
    )
    assert merged == RouteSync(matched=5, synced=3, rejected=1, version="v1", errors=("bad",))
    assert merge([]) == RouteSync()


def _report(replica: str, ttl: int, *routes: tuple[str, int, int]) -> ppb.SyncReport:
    return ppb.SyncReport(
        replica=replica,
        ttl_seconds=ttl,
        routes=[
            ppb.RouteSyncState(namespace="ns", name=n, matched=m, synced=s, version="v") for n, m, s in routes
        ],
    )


class Local:
    def route_sync(self, namespace: str, name: str) -> RouteSync:
        return RouteSync(matched=1, synced=1, version="v")


def test_peer_reports_are_added_replaced_withdrawn_and_expire() -> None:
    clock = Clock()
    book = PeerSyncBook(clock=clock)
    changed: list[tuple[str, str]] = []
    book.on_change(lambda ns, name: changed.append((ns, name)))
    merged = MergedSync(local=Local(), peers=book)
    book.accept(_report("r2", 10, ("chat", 2, 1)))
    assert merged.route_sync("ns", "chat") == RouteSync(matched=3, synced=2, version="v")
    assert changed == [("ns", "chat")]
    book.accept(_report("r2", 10, ("chat", 2, 1)))  # the same again (heartbeat): nothing to rewrite
    assert changed == [("ns", "chat")]
    book.accept(_report("r2", 10, ("other", 1, 1)))  # replaces: chat gone from r2, other added
    assert merged.route_sync("ns", "chat").matched == 1
    assert sorted(changed[1:]) == [("ns", "chat"), ("ns", "other")]
    book.accept(_report("r3", 5, ("chat", 4, 4)))
    assert book.replicas() == 2 and merged.route_sync("ns", "chat").matched == 5
    clock.now += 6
    book.expire()
    assert book.replicas() == 1 and merged.route_sync("ns", "chat").matched == 1
    book.accept(_report("r2", 0))  # a clean stop withdraws at once
    assert book.replicas() == 0 and merged.route_sync("ns", "other").matched == 1


@pytest.mark.parametrize("ttl", [0, 10, 3600])
def test_a_report_never_counts_longer_than_a_minute(ttl: int) -> None:
    clock = Clock()
    book = PeerSyncBook(clock=clock)
    book.accept(_report("r2", ttl, ("chat", 1, 1)))
    clock.now += 61
    assert book.route_sync("ns", "chat") == []


# -- forwarding ------------------------------------------------------------------------------------------


def test_forwarding_passes_only_the_callers_credentials_and_marks_the_hop() -> None:
    incoming = [("Authorization", "Bearer t"), ("user-agent", "grpc"), ("x-llmroute-session", "s")]
    out = forwarding_metadata(incoming, via="replica-a")
    assert out == (("authorization", "Bearer t"), (FORWARDED, "replica-a"))
    assert not forwarded(incoming) and forwarded(out)
    assert forwarding_metadata(None, via="r") == ((FORWARDED, "r"),)


def test_the_link_refuses_when_no_replica_leads_or_this_one_does() -> None:
    class State:
        identity = "me"
        leader = False
        leader_address = ""

    state = State()
    link = LeaderLink(leadership=state, ca_pem=b"ca")
    with pytest.raises(NoLeader, match="no replica leads"):
        link.channel()
    state.leader = True
    with pytest.raises(NoLeader, match="this replica leads"):
        link.channel()
    state.leader, state.leader_address = False, "10.0.0.2:14100"
    with pytest.raises(NoLeader, match="no CA"):
        LeaderLink(leadership=state, ca_pem=None).channel()
