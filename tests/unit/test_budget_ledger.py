"""Spend bookkeeping: money, states, forecast, alerts, batch de-duplication and acknowledgement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmroute_operator.budgets.ledger import BatchLog, BudgetLedger, Limits, from_micro, to_micro
from llmroute_proto.periods import Window

START = datetime(2026, 3, 1, tzinfo=UTC)
MARCH = Window(START, datetime(2026, 4, 1, tzinfo=UTC))


def ledger(spent: int = 0, *, soft: str | None = "800", hard: str = "1000") -> BudgetLedger:
    limits = Limits(hard=to_micro(hard), soft=to_micro(soft) if soft else None, alerts=(50, 80, 100))
    return BudgetLedger(window=MARCH, limits=limits, spent=spent)


@pytest.mark.parametrize(
    ("text", "micro"), [("0", 0), ("800", 800_000_000), ("0.25", 250_000), ("12.000001", 12_000_001)]
)
def test_money_round_trips_exactly(text: str, micro: int) -> None:
    assert to_micro(text) == micro
    assert from_micro(micro) == text


def test_money_is_plain_decimal_without_float_drift() -> None:
    assert from_micro(1_000_000_000) == "1000"
    assert from_micro(sum([100_000] * 10)) == "1"  # ten times 0.1 is exactly 1
    with pytest.raises(ValueError, match="six decimals"):
        to_micro("0.0000001")


def test_states_follow_soft_and_hard_limits() -> None:
    book = ledger()
    assert book.state == "Normal" and book.remaining == to_micro("1000")
    book.add(to_micro("799.999999"))
    assert book.state == "Normal"
    book.add(1)
    assert book.state == "SoftLimited"
    book.add(to_micro("200"))
    assert book.state == "Exhausted" and book.remaining == 0
    book.add(to_micro("5"))
    assert book.remaining == 0  # never negative
    assert ledger(to_micro("900"), soft=None).state == "Normal"


def test_revision_counts_only_real_changes() -> None:
    book = ledger()
    book.add(0)
    book.add(-5)  # a refund is not a thing usage records carry
    assert book.revision == 0 and book.spent == 0
    book.add(3)
    assert book.revision == 1


def test_forecast_extrapolates_the_run_rate_to_the_period_end() -> None:
    book = ledger(to_micro("100"))
    ten_days = START + timedelta(days=10)  # 100 USD in 10 of 31 days -> 310 USD
    assert from_micro(book.forecast(ten_days)) == "310"
    assert book.forecast(MARCH.end) == book.spent
    # Early in the period the rate is taken over at least 5% of it, not over a few seconds.
    early = ledger(to_micro("1")).forecast(START + timedelta(seconds=10))
    assert early == pytest.approx(to_micro("21"), rel=1e-3)  # 1 spent + 20 more over the 31 days


def test_alerts_fire_once_per_threshold() -> None:
    book = ledger()
    book.add(to_micro("499"))
    assert book.new_alerts() == ()
    book.add(to_micro("350"))
    assert book.crossed() == (50, 80) and book.new_alerts() == (50, 80)
    book.alerted_percent = 80  # reported and persisted
    assert book.new_alerts() == ()
    book.add(to_micro("151"))
    assert book.new_alerts() == (100,)


def test_roll_starts_a_new_period() -> None:
    book = ledger(to_micro("900"))
    book.alerted_percent = 80
    april = Window(MARCH.end, datetime(2026, 5, 1, tzinfo=UTC))
    book.roll(april)
    assert (book.spent, book.alerted_percent, book.window, book.state) == (0, 0, april, "Normal")


KEY = ("team-a", "budget")


def test_batches_count_once_and_ack_after_persistence() -> None:
    log = BatchLog()
    persisted = {KEY: 0}
    assert not log.duplicate(1)
    log.accept(1, {KEY: 1})
    log.accept(2, {})  # touched no budget
    assert log.duplicate(1) and log.duplicate(2) and not log.duplicate(3)
    assert not log.advance(persisted.__getitem__)
    assert log.watermark == 0
    persisted[KEY] = 1
    assert log.advance(persisted.__getitem__)
    assert log.watermark == 2 and log.pending == 0
    assert log.duplicate(1) and log.duplicate(2)  # still duplicates after the ack


def test_ack_is_contiguous() -> None:
    log = BatchLog()
    log.accept(1, {})
    log.accept(3, {})  # 2 has not arrived
    log.advance(lambda key: 0)
    assert log.watermark == 1
    log.accept(2, {})
    log.advance(lambda key: 0)
    assert log.watermark == 3


def test_first_batch_from_a_sidecar_sets_the_base() -> None:
    """After an operator restart, a sidecar resends from its oldest unacknowledged batch."""
    log = BatchLog()
    log.accept(57, {})
    log.advance(lambda key: 0)
    assert log.watermark == 57
    assert log.duplicate(12)
