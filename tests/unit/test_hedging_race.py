"""The hedge race of the attempt loop (``attempts.py``), driven by scripted attempts with delays and
reservations that record what they were settled or released with, no sockets: no hedge before the
delay, a hedge that wins leaves the first call billed (abandoned), a tie goes to the first
candidate with the other answer billed by its usage, a hedge cancelled before it was sent is
neither billed nor leaked, and both failing moves on to the third candidate."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from llmroute_sidecar.adapters.errors import ErrorKind, ProviderError
from llmroute_sidecar.attempts import Policy, Trace, _attempts
from llmroute_sidecar.config.snapshot import BackendEntry

from .health_support import snapshot

HEDGED = Policy(per_attempt=5.0, total=10.0, retries=0, hedge_delay=0.05)


@dataclass
class Money:
    """A reservation: released (unsent) or settled (billed) exactly once."""

    backend: str
    released: bool = False

    def release(self) -> None:
        assert not self.released
        self.released = True


@dataclass
class Spend:
    made: list[Money] = field(default_factory=list)

    async def __call__(self, backend: BackendEntry) -> Money:
        money = Money(backend.name)
        self.made.append(money)
        return money


def candidates(*names: str) -> list[BackendEntry]:
    snap = snapshot({"chat": list(names)})
    return [snap.models["chat"].backends_by_name[n] for n in names]


def scripted(**plans: tuple[float, ProviderError | None]) -> Any:
    """Each backend answers after its delay, or fails with its error."""
    sent: list[str] = []

    async def attempt(backend: BackendEntry, deadline: float) -> Any:
        sent.append(backend.name)
        seconds, error = plans[backend.name]
        await asyncio.sleep(seconds)
        if error is not None:
            raise error
        return {"from": backend.name, "usage": {"prompt_tokens": 7, "completion_tokens": 3}}

    attempt.sent = sent  # type: ignore[attr-defined]
    return attempt


async def run(attempt: Any, *names: str, spend: Spend | None = None) -> tuple[str, Trace]:
    trace = Trace()
    backend, _ = await _attempts(candidates(*names), HEDGED, trace, attempt, spend=spend, hedge=True)
    return backend.name, trace


async def test_an_answer_within_the_delay_sends_no_hedge() -> None:
    attempt = scripted(a=(0.0, None), b=(0.0, None))
    winner, trace = await run(attempt, "a", "b")
    assert winner == "a" and attempt.sent == ["a"] and not trace.hedged and not trace.abandoned


async def test_a_hedge_that_wins_leaves_the_first_call_billed() -> None:
    spend = Spend()
    attempt = scripted(a=(5.0, None), b=(0.0, None))
    winner, trace = await run(attempt, "a", "b", spend=spend)
    assert winner == "b" and trace.hedged == "b" and trace.hedge_won
    assert attempt.sent == ["a", "b"] and trace.attempts == 2
    (lost,) = trace.abandoned
    assert lost.backend.name == "a" and lost.response is None  # cut off in flight: billed at the estimate
    assert lost.reservation is spend.made[0] and not spend.made[0].released
    assert trace.reservation is spend.made[1]


async def test_a_near_tie_bills_both_calls_and_gives_no_reservation_back() -> None:
    attempt = scripted(a=(0.08, None), b=(0.03, None))  # both done at about 80 ms
    spend = Spend()
    winner, trace = await run(attempt, "a", "b", spend=spend)
    if winner == "a":  # the same wait returned both
        (lost,) = trace.abandoned
        assert lost.backend.name == "b" and lost.response is not None and lost.response["from"] == "b"
    else:  # b finished first: a was cut off in flight
        assert [lost.backend.name for lost in trace.abandoned] == ["a"]
    assert not any(money.released for money in spend.made)  # both were sent: none given back


async def test_a_hedge_cancelled_before_it_was_sent_is_neither_billed_nor_leaked() -> None:
    spend = Spend()
    gate_entered = asyncio.Event()

    class SlowGate:
        """The hedge's backend has no free slot: its call waits, unsent, until cancelled."""

        async def enter(self, backend: BackendEntry, seconds: float) -> Any:
            if backend.name == "b":
                gate_entered.set()
                await asyncio.sleep(10)
            return None

    attempt = scripted(a=(0.15, None), b=(0.0, None))
    trace = Trace()
    backend, _ = await _attempts(
        candidates("a", "b"),
        HEDGED,
        trace,
        attempt,
        spend=spend,
        gate=SlowGate(),  # type: ignore[arg-type]
        hedge=True,
    )
    assert backend.name == "a" and gate_entered.is_set() and attempt.sent == ["a"]
    assert trace.abandoned == [] and trace.attempts == 1
    assert [m.released for m in spend.made] == [False, True]  # the hedge's reservation went back


async def test_when_both_racers_fail_the_loop_moves_on_to_the_third() -> None:
    boom = ProviderError(ErrorKind.SERVER, "boom")
    attempt = scripted(a=(0.1, boom), b=(0.0, boom), c=(0.0, None))
    winner, trace = await run(attempt, "a", "b", "c")
    assert winner == "c" and attempt.sent == ["a", "b", "c"] and trace.abandoned == []
