"""OpenAI's rate-limit headers (``llmroute_sidecar.ratelimit.headers``): Go-style durations, the
tightest bucket of each kind, and Retry-After in whole seconds."""

from __future__ import annotations

import pytest

from llmroute_sidecar.ratelimit import openai_duration
from llmroute_sidecar.ratelimit.headers import BucketView, rate_headers, retry_after_header


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-1, "0s"),
        (0.02, "20ms"),
        (0.0201, "21ms"),  # rounded up: never invite an early retry
        (0.999, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (17.28, "17.28s"),
        (59.9999, "1m0s"),
        (60, "1m0s"),
        (86.4, "1m26.4s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3723.25, "1h2m3.25s"),
    ],
)
def test_openai_duration(seconds: float, text: str) -> None:
    assert openai_duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(0, "1"), (0.01, "1"), (1.0, "1"), (1.2, "2"), (59.5, "60")])
def test_retry_after_is_whole_seconds_at_least_one(seconds: float, text: str) -> None:
    assert retry_after_header(seconds) == text


def test_headers_describe_the_tightest_bucket_of_each_kind() -> None:
    headers = rate_headers(
        [
            BucketView("requests", 60, 50.0),  # 10 s to full
            BucketView("requests", 600, 3.7),  # the tightest: 3 left
            BucketView("tokens", 1000, -200.0),  # debt shows as 0 remaining
            BucketView("tokens", 100_000, 10.0),
        ]
    )
    assert headers == {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "59.63s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m12s",
    }


def test_headers_only_for_kinds_the_route_limits() -> None:
    assert rate_headers([BucketView("tokens", 60, 60.0)]) == {
        "x-ratelimit-limit-tokens": "60",
        "x-ratelimit-remaining-tokens": "60",
        "x-ratelimit-reset-tokens": "0s",
    }
    assert rate_headers([]) == {}


def test_equal_remaining_prefers_the_slower_refill() -> None:
    headers = rate_headers([BucketView("requests", 60, 0.9), BucketView("requests", 600, 0.0)])
    assert headers["x-ratelimit-limit-requests"] == "600"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
