"""The demo's bookkeeping (hack/demo_view.py): breaker scraping, budget rows, failover counting."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from demo_view import Outcome, Traffic, budget_rows, parse_breakers, plain_line

METRICS = """\
# HELP llmroute_circuit_breaker_state Circuit breaker state per backend
# TYPE llmroute_circuit_breaker_state gauge
llmroute_circuit_breaker_state{backend="claude",route="chat",state="closed"} 0.0
llmroute_circuit_breaker_state{backend="claude",route="chat",state="open"} 1.0
llmroute_circuit_breaker_state{backend="gpt4o",route="chat",state="closed"} 1.0
llmroute_circuit_breaker_state{backend="gpt4o",route="chat",state="open"} 0.0
llmroute_requests_total{backend="gpt4o"} 3.0
"""


def test_parse_breakers_keeps_the_state_whose_gauge_is_one() -> None:
    assert parse_breakers(METRICS) == {("chat", "claude"): "open", ("chat", "gpt4o"): "closed"}
    assert parse_breakers("") == {}


def test_budget_rows_compare_spent_with_the_hard_limit() -> None:
    listing = {
        "items": [
            {
                "metadata": {"name": "chat-daily"},
                "spec": {"limits": {"soft": "80", "hard": "100"}},
                "status": {"spent": "42.5", "state": "Normal"},
            },
            {"metadata": {"name": "fresh"}, "spec": {"limits": {"soft": "1", "hard": "2"}}},
        ]
    }
    rows = budget_rows(listing)
    assert rows[0] == {
        "name": "chat-daily", "spent": "42.5", "soft": "80", "hard": "100", "state": "Normal", "percent": "42%",
    }  # fmt: skip
    assert rows[1]["spent"] == "0" and rows[1]["state"] == "Normal" and rows[1]["percent"] == "0%"


def test_a_failover_is_a_retry_or_another_backend_but_not_a_hit_or_downgrade() -> None:
    assert not Outcome("normal", "s0", 200, "gpt4o", "gpt4o").failover
    assert Outcome("normal", "s0", 200, "gpt4o", "gpt4o", attempts=2).failover
    assert Outcome("premium", "s1", 200, "claude", "gpt4o").failover
    assert not Outcome("repeat", "s1", 200, "gpt4o", None, cache="hit").failover
    assert not Outcome("burst", "s0", 200, "gpt4o", "mini", downgraded=True).failover
    assert not Outcome("eu-only", "eu", 503, "claude").failover


def test_traffic_counts_per_kind_backend_and_open_breakers() -> None:
    traffic = Traffic()
    traffic.record(Outcome("premium", "s1", 200, "claude", "gpt4o", "us-east-1", attempts=3))
    traffic.record(Outcome("premium", "s1", 200, "claude", "claude", "eu-west-1"))
    traffic.record(Outcome("premium", "s1", 503, "claude"))
    traffic.set_breakers("s1", parse_breakers(METRICS))
    stats = traffic.kinds["premium"]
    assert (stats.sent, stats.ok, stats.failovers) == (3, 2, 1)
    assert stats.regions == {"us-east-1": 1, "eu-west-1": 1}
    assert traffic.served[("s1", "claude")] == 1
    assert traffic.ever_open == {"claude"}
    assert "claude@s1:open" in plain_line(traffic)
