"""Upstream faults against a real sidecar: what the app sees, what the sidecar records, what it keeps.

Each scenario runs the official ``openai`` SDK (blocking client, several threads) against a real
``python -m llmroute_sidecar --config route.yaml`` subprocess, in front of two real fake providers on
loopback: a ``primary`` that gets the faults and a healthy ``fallback`` (``upstream_support.py``).
Counts and durations are fixed, so every scenario ends by itself:

1. flapping: the primary process goes away and comes back every second while traffic runs;
2. a 429 storm with ``Retry-After`` on the primary;
3. streams reset or cut after a few chunks (and one ended cleanly but without its terminal event);
4. a primary that hangs before answering, or stalls mid-stream;
5. a slow primary (high latency before the headers, a slow chunk cadence).

Every scenario asserts the same three things, plus its own:

- no app request fails beyond the allowance its route's policy implies (stated in each test): a
  fault before the first byte is absorbed by a retry or the fallback; only a stream that already
  reached the app may end in an explicit error event, and never in a clean end with a cut answer;
- every request the app sent has exactly one audit line (``--audit-log``, one JSON line per request,
  matched by the ``x-request-id`` the app sends), answered ones with the backend, tokens, attempts
  and cost the app was told (the ``x-llmroute-cost-usd`` header, or the usage chunk priced by the
  route); the sidecar's ``llmroute_requests_total`` and ``llmroute_cost_usd_total`` agree with those
  lines;
- the sidecar's RSS after the scenario and a short settle is within :data:`RSS_BOUND_KB` of its RSS
  before it (measured after a warm-up of the same shape, so only growth the scenario caused counts),
  and its open fds within :data:`FD_BOUND` (a connection left open per fault would show).

Each scenario prints one line of figures (``upstream-faults <name>: ...``) for the CI log.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from llmroute_fakes.server import FakeProvider

from .upstream_support import (
    INPUT_PER_MILLION,
    OUTPUT_PER_MILLION,
    ROUTE,
    Answer,
    ProviderLoop,
    RssWatch,
    SidecarProcess,
    Tally,
    free_port,
    percentile,
    poll,
    route_yaml,
    run_threads,
)

pytestmark = pytest.mark.timeout(90)

# Growth of the sidecar's RSS a scenario may leave behind. Measured on this 2-core machine after a
# warm-up of the same shape: 0.0-1.4 MB (baseline ~71 MB). Something kept per request that should
# not be (a response, a task, a buffer) shows as more: 2.5 KB per request over the ~2,000 of the
# flapping or 429 scenarios, ~100 KB per request over the 48 of the hang and slow ones.
RSS_BOUND_KB = 5 * 1024
THREADS = 6  # the app's concurrency in every scenario
# Open fds (sockets) a scenario may leave: keep-alive connections beyond those of the warm-up, at
# most one per concurrent request to each provider and from the app (3 x THREADS; measured 0-12).
# A connection leaked per faulted request (21 to hundreds per scenario here) is more.
FD_BOUND = 3 * THREADS
SETTLE_S = 5.0  # how long RSS may take to come back (freed buffers, closed connections)
CLIENT_TIMEOUT_S = 20.0  # the app's own limit: beyond every route timeout below, so it never fires


def _client(sidecar: SidecarProcess) -> openai.OpenAI:
    # max_retries=0: the sidecar does the retrying; an app-side retry would hide its failures.
    return openai.OpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S)


def _prompt(request_id: str) -> str:
    return f"question {request_id}"


def expected_text(protocol: str, prompt: str) -> str:
    """The fake providers' deterministic answer (``llmroute_fakes/replies.py``)."""
    return f"fake-{protocol} reply to: {prompt[:40]}"


PROTOCOL_OF = {"primary": "openai", "fallback": "openai-compatible"}


def _error_kind(exc: openai.OpenAIError) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "app_timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        return f"status_{exc.status_code}"
    if isinstance(exc, openai.APIError):
        return "error_event"  # an SSE error event after the stream began
    return type(exc).__name__


def ask(client: openai.OpenAI, tally: Tally, request_id: str) -> Answer:
    """One non-streaming chat completion, recorded in ``tally``."""
    prompt = _prompt(request_id)
    started = time.monotonic()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[{"role": "user", "content": prompt}],
            extra_headers={"x-request-id": request_id},
        )
        completion = raw.parse()
    except openai.OpenAIError as exc:
        answer = Answer(request_id, time.monotonic() - started, error=_error_kind(exc), detail=str(exc))
    else:
        backend = raw.headers.get("x-llmroute-backend", "")
        usage = completion.usage
        answer = Answer(
            request_id,
            time.monotonic() - started,
            backend=backend,
            attempts=int(raw.headers.get("x-llmroute-attempts", "0")),
            cost_usd=float(raw.headers["x-llmroute-cost-usd"]),
            usage=(usage.prompt_tokens, usage.completion_tokens) if usage is not None else None,
        )
        text = completion.choices[0].message.content if completion.choices else None
        if text != expected_text(PROTOCOL_OF.get(backend, "?"), prompt):
            answer.error, answer.detail = "wrong_answer", repr(text)
    tally.add(answer)
    return answer


def ask_stream(client: openai.OpenAI, tally: Tally, request_id: str) -> Answer:
    """One streamed chat completion with usage, recorded in ``tally``.

    The SDK ends a stream quietly when the connection closes without ``[DONE]``, so "complete" is
    judged here: the whole expected text, a finish reason, and the usage chunk. Anything less without
    an error is a ``truncated`` answer, which no policy allows.
    """
    prompt = _prompt(request_id)
    started = time.monotonic()
    parts: list[str] = []
    finish: str | None = None
    usage: tuple[int, int] | None = None
    backend, attempts = "", 0
    first_chunk_s: float | None = None
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-request-id": request_id},
        )
        backend = raw.headers.get("x-llmroute-backend", "")
        attempts = int(raw.headers.get("x-llmroute-attempts", "0"))
        for chunk in raw.parse():
            for choice in chunk.choices:
                if choice.delta.content and first_chunk_s is None:
                    first_chunk_s = time.monotonic() - started
                parts.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
            if chunk.usage is not None:
                usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
    except openai.OpenAIError as exc:
        answer = Answer(
            request_id,
            time.monotonic() - started,
            backend=backend,
            attempts=attempts,
            stream=True,
            relayed="".join(parts),
            error=_error_kind(exc),
            detail=str(exc),
        )
    else:
        answer = Answer(
            request_id,
            time.monotonic() - started,
            backend=backend,
            attempts=attempts,
            stream=True,
            relayed="".join(parts),
            first_chunk_s=first_chunk_s,
            usage=usage,
        )
        complete = "".join(parts) == expected_text(PROTOCOL_OF.get(backend, "?"), prompt)
        if not complete or finish is None or usage is None:
            answer.error = "truncated"
            answer.detail = f"text {''.join(parts)!r}, finish {finish}, usage {usage}"
    tally.add(answer)
    return answer


def _price_micro(usage: tuple[int, int]) -> int:
    return round(usage[0] * INPUT_PER_MILLION + usage[1] * OUTPUT_PER_MILLION)


def check_accounting(sidecar: SidecarProcess, tally: Tally) -> list[dict[str, Any]]:
    """Every request the app sent has exactly one audit line, and an answered one the same backend,
    tokens and cost the app was told; returns the lines."""
    sent = [a.request_id for a in tally.answers]
    assert len(set(sent)) == len(sent), "the harness reuses request ids"
    lines = sidecar.audit_when(len(sent))
    ids = [line["request_id"] for line in lines]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicated, f"usage recorded twice: {duplicated[:5]}"
    missing = sorted(set(sent) - set(ids))
    assert not missing, f"usage records lost: {missing[:5]} ({len(missing)} of {len(sent)})"
    assert len(ids) == len(sent), f"audit lines for requests nobody sent: {sorted(set(ids) - set(sent))[:5]}"
    by_id = {line["request_id"]: line for line in lines}
    for answer in tally.answers:
        line = by_id[answer.request_id]
        if answer.error:
            assert line["outcome"] != "ok", (answer, line)
            continue
        assert (line["outcome"], line["status"], line["backend"]) == ("ok", 200, answer.backend), line
        assert answer.usage is not None
        assert (line["input_tokens"], line["output_tokens"]) == answer.usage, (answer, line)
        micro = round(line["cost_usd"] * 1e6)
        assert micro == _price_micro(answer.usage), (answer, line)
        if answer.cost_usd is not None:  # the header the app got says the same
            assert round(answer.cost_usd * 1e6) == micro, (answer, line)
        assert line["attempts"] == answer.attempts, (answer, line)
    # The sidecar's own aggregates agree with its records: counted once there too.
    metrics = sidecar.metrics()
    for backend in {line["backend"] for line in lines if line["backend"]}:
        mine = [line for line in lines if line["backend"] == backend]
        cost = metrics.get(("llmroute_cost_usd_total", frozenset({("model", "chat"), ("backend", backend)})))
        assert abs((cost or 0.0) - sum(line["cost_usd"] for line in mine)) < 1e-9, (backend, cost)
        for outcome in {line["outcome"] for line in mine}:
            labels = {
                "model": "chat",
                "backend": backend,
                "provider": mine[0]["provider"],
                "outcome": outcome,
            }
            counted = metrics.get(("llmroute_requests_total", frozenset(labels.items())))
            assert counted == sum(1 for line in mine if line["outcome"] == outcome), (labels, counted)
    return lines


@dataclass
class Scenario:
    """One scenario's sidecar, fakes and figures."""

    name: str
    loop: ProviderLoop
    sidecar: SidecarProcess
    primary: FakeProvider
    fallback: FakeProvider
    tally: Tally = field(default_factory=Tally)
    rss_before_kb: int = 0
    rss_peak_kb: int = 0
    rss_after_kb: int = 0
    fds_before: int = 0
    fds_after: int = 0
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def metric(self, name: str, **labels: str) -> float:
        return self.sidecar.metric(name, route=ROUTE, **labels)

    def transitions(self) -> dict[str, int]:
        return {
            state: int(
                self.metric("llmroute_circuit_breaker_transitions_total", backend="primary", state=state)
            )
            for state in ("open", "half_open", "closed")
        }

    def figures(self) -> str:
        answers = self.tally.answers
        fallbacks = sum(1 for a in self.tally.ok if a.backend == "fallback")
        figures = {
            "requests": len(answers),
            "ok": len(self.tally.ok),
            "failures": self.tally.failures_by_kind() or 0,
            "served": self.tally.served_by(),
            "fallbacks": fallbacks,
            "breaker_transitions": self.transitions(),
            **self.extra,
            "rss_mb": f"{self.rss_before_kb / 1024:.1f}/{self.rss_peak_kb / 1024:.1f}/"
            f"{self.rss_after_kb / 1024:.1f} (before/peak/after)",
            "fds": f"{self.fds_before}/{self.fds_after} (before/after)",
            "duration_s": round(self.seconds, 2),
        }
        return f"upstream-faults {self.name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())


@contextmanager
def scenario(
    name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    resilience: str,
    *,
    warm_up: Callable[[openai.OpenAI], Tally],
    primary_port: int = 0,
) -> Iterator[Scenario]:
    """Fakes and a sidecar for one scenario; warms up, takes the RSS baseline, and on the way out
    checks accounting and memory and prints the figures."""
    with ProviderLoop() as loop:
        primary = loop.provider("openai", api_key="sk-primary", port=primary_port)
        fallback = loop.provider("openai-compatible")
        with SidecarProcess(tmp_path / name, route_yaml(primary, fallback, resilience)) as sidecar:
            run = Scenario(name, loop, sidecar, primary, fallback)
            client = _client(sidecar)
            # Warm-up: the same shape of traffic, clean, so that pools, caches and lazily built
            # structures exist before the baseline; what the scenario adds on top is what counts.
            warm = warm_up(client)
            primary.clear()
            fallback.clear()
            run.rss_before_kb = sidecar.rss_kb()
            run.fds_before = sidecar.open_fds()
            started = time.monotonic()
            try:
                with RssWatch(sidecar) as watch:
                    yield run
            except BaseException:
                with capsys.disabled():  # the figures help most when the scenario failed
                    print(f"\n{run.figures()} (failed after {time.monotonic() - started:.1f}s)")
                raise
            run.seconds = time.monotonic() - started
            # Memory and fds first, polled while the sidecar is idle.
            bound = run.rss_before_kb + RSS_BOUND_KB
            poll(lambda: sidecar.rss_kb() <= bound, timeout=SETTLE_S, interval=0.25)
            run.rss_after_kb = sidecar.rss_kb()
            run.rss_peak_kb = max(watch.peak_kb, run.rss_after_kb)
            # Connections to hung or cut upstreams must be closed, not parked: fds come back too.
            fd_bound = run.fds_before + FD_BOUND
            poll(lambda: sidecar.open_fds() <= fd_bound, timeout=SETTLE_S, interval=0.25)
            run.fds_after = sidecar.open_fds()
            with capsys.disabled():
                print("\n" + run.figures())
            # The warm-up's requests are accounted like any others.
            check_accounting(sidecar, Tally(answers=warm.answers + run.tally.answers))
            assert run.fds_after <= fd_bound, f"fds {run.fds_before} -> {run.fds_after}"
            assert run.rss_after_kb <= bound, (
                f"RSS grew by {(run.rss_after_kb - run.rss_before_kb) / 1024:.1f} MB "
                f"(bound {RSS_BOUND_KB / 1024:.0f} MB)"
            )


def _warm_mixed(client: openai.OpenAI, count: int = 60) -> Tally:
    tally = Tally()

    def work(t: int) -> None:
        for i in range(count // THREADS):
            (ask_stream if i % 2 else ask)(client, tally, f"warm-{t}-{i}")

    run_threads(THREADS, work)
    assert not tally.failed, tally.failed[:3]
    return tally


# --- 1. flapping ------------------------------------------------------------------------------------

FLAP_CYCLES = 4
FLAP_HALF_PERIOD_S = 1.0


def test_flapping_primary_is_absorbed_by_the_fallback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The primary's process stops and starts again on the same port every second (connections
    refused, pooled connections dropped, streams in flight cut) while six threads send chat
    completions, every other one streamed (at 150 ms a chunk, so outages catch some mid-way).

    Allowance: none for non-streaming requests, nor for streams the outage met before their first
    chunk: a retry or the always-up fallback serves them. A stream the outage cut after its first
    chunk reached the app may end in an explicit error event (never quietly). The breaker must open
    during the outages and close again after them (a half-open probe succeeds), and end closed once
    the primary stays up.
    """
    resilience = (
        "    timeout: {perAttempt: 2s, total: 6s}\n"
        "    retries: {attempts: 1, backoff: {base: 10ms, max: 50ms}, retryOn: [5xx, connect, reset]}\n"
        "    circuitBreaker: {consecutiveFailures: 3, failureRate: 0, cooldown: 500ms, maxEjectedPercent: 50}\n"
    )
    with scenario(
        "flapping", tmp_path, capsys, resilience, warm_up=_warm_mixed, primary_port=free_port()
    ) as run:
        client = _client(run.sidecar)
        # 8 gaps x 150 ms outlast the fake's 0.5 s graceful stop: an outage cuts the streams in flight.
        run.primary.set_faults("slow_stream_ms=150")
        done = threading.Event()
        outages: list[float] = []

        def flap() -> None:
            try:
                for _ in range(FLAP_CYCLES):
                    time.sleep(FLAP_HALF_PERIOD_S)
                    # Down from here: the listener closes at once; the stop itself takes up to
                    # ~1 s (0.5 s of grace for requests in flight, then they are cut).
                    went_down = time.monotonic()
                    run.loop.run(run.primary.stop())
                    outages.append(went_down)
                    time.sleep(max(0.0, went_down + FLAP_HALF_PERIOD_S - time.monotonic()))
                    run.loop.run(run.primary.start())
                # Up for good: traffic goes on until the breaker has closed again (or 5 s pass).
                poll(
                    lambda: (
                        run.metric("llmroute_circuit_breaker_state", backend="primary", state="closed") == 1
                    ),
                    timeout=5.0,
                    interval=0.1,
                )
                time.sleep(0.3)  # a few requests on the recovered primary
            finally:
                done.set()

        counter = itertools.count()

        def work(t: int) -> None:
            while not done.is_set():
                n = next(counter)
                (ask_stream if n % 2 else ask)(client, run.tally, f"flap-{t}-{n}")

        flapper = threading.Thread(target=flap, name="flapper")
        flapper.start()
        run_threads(THREADS, work)
        flapper.join()

        run.extra["outages"] = len(outages)
        run.extra["retries"] = int(run.metric("llmroute_retries_total", backend="primary"))
        cut = [
            a for a in run.tally.failed if a.stream and a.error == "error_event" and a.backend == "primary"
        ]
        run.extra["streams_cut_mid_way"] = len(cut)
        assert len(outages) == FLAP_CYCLES
        assert [a for a in run.tally.failed if a not in cut] == [], run.tally.failed[:3]
        # Whether an outage meets a stream already under way depends on where the breaker's probes
        # land on a loaded machine (an open breaker sends every stream to the fallback): counted here,
        # not required. Cuts after the first chunk are forced, deterministically, by the stream-cuts
        # scenario (test_streams_cut_mid_way_end_complete_or_with_an_explicit_error).
        served = run.tally.served_by()
        assert served.get("primary", 0) > 0 and served.get("fallback", 0) > 0, served
        transitions = run.transitions()
        # Each outage opens the breaker (3 failures in a row take milliseconds). Its first probe,
        # 0.5 s in, fails and doubles the cooldown to 1 s, so the next probe lands in the up half
        # and closes it (a cooldown much under half the period would double past the up half).
        # That landing depends on the fake's stop time on a loaded machine: one recovery in four
        # may close only at the next up half, hence "- 1"; the last one is waited for above.
        assert transitions["open"] >= FLAP_CYCLES, transitions
        assert transitions["closed"] >= FLAP_CYCLES - 1, transitions
        assert transitions["half_open"] >= transitions["closed"], transitions
        assert run.metric("llmroute_circuit_breaker_state", backend="primary", state="closed") == 1
        assert run.metric("llmroute_ejections_total", backend="primary") >= FLAP_CYCLES - 1


# --- 2. 429 storm -----------------------------------------------------------------------------------

STORM_S = 4.0
AFTER_STORM_S = 2.0
RETRY_AFTER_S = 1.0
# A request admitted to the primary just before another one's 429 set the hold may still reach it
# a moment later; beyond this slack, a request inside a hold means Retry-After was not honoured.
HOLD_SLACK_S = 0.25


def test_429_storm_honours_retry_after_and_falls_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """For 4 s the primary answers 60% of requests with 429 and ``Retry-After: 1``; then it recovers.
    Every other request is streamed (a 429 comes before any chunk, so streams fail over the same way).

    Allowance: none. The route retries a 429 once on the same backend (waiting at least Retry-After)
    and then falls back, so every request is served: by the primary, or by the fallback. While a
    Retry-After holds the primary, no new request reaches it; no answer took more attempts than the
    policy allows (two on the primary, one on the fallback); the breaker never opens (a 429 is the
    provider protecting itself, not an unhealthy backend); and traffic returns to the primary after
    the storm.
    """
    resilience = (
        "    timeout: {perAttempt: 2s, total: 8s}\n"
        "    retries: {attempts: 1, backoff: {base: 10ms, max: 50ms}, retryOn: ['429', 5xx, connect]}\n"
        "    circuitBreaker: {consecutiveFailures: 3, cooldown: 30s}\n"
    )
    with scenario("429-storm", tmp_path, capsys, resilience, warm_up=_warm_mixed) as run:
        client = _client(run.sidecar)
        run.primary.set_faults(fail_rate=0.6, failure=f"status=429,retry_after={RETRY_AFTER_S:g}", seed=11)
        storm_over = threading.Event()
        done = threading.Event()
        after_storm: list[str] = []
        counter = itertools.count()

        def work(t: int) -> None:
            while not done.is_set():
                n = next(counter)
                answer = (ask_stream if n % 2 else ask)(client, run.tally, f"storm-{t}-{n}")
                if storm_over.is_set():
                    after_storm.append(answer.backend)

        def storm() -> None:
            time.sleep(STORM_S)
            run.primary.set_faults(None)
            # A request that met the last 429 may still wait out its Retry-After: from one hold on,
            # traffic must be back on the primary.
            time.sleep(RETRY_AFTER_S)
            storm_over.set()
            time.sleep(AFTER_STORM_S)
            done.set()

        timer = threading.Thread(target=storm, name="storm")
        timer.start()
        run_threads(THREADS, work)
        timer.join()

        arrivals = list(run.primary.requests)
        throttled = [r.received_at for r in arrivals if r.faults.status == 429]
        inside_hold = [
            r
            for r in arrivals
            if any(t + HOLD_SLACK_S < r.received_at < t + RETRY_AFTER_S - 0.05 for t in throttled)
        ]
        throttle_metric = int(run.metric("llmroute_backend_throttled_total", backend="primary"))
        run.extra.update(
            primary_429s=len(throttled),
            primary_arrivals=len(arrivals),
            throttled_metric=throttle_metric,
            arrivals_inside_holds=len(inside_hold),
            retries=int(run.metric("llmroute_retries_total", backend="primary")),
        )
        assert not run.tally.failed, run.tally.failed[:3]
        assert len(throttled) >= 5, "the storm really hit the primary"
        assert inside_hold == [], [(r.received_at, r.faults) for r in inside_hold[:5]]
        # Each hold began with a 429; overlapping 429s extend a hold rather than start one.
        assert 1 <= throttle_metric <= len(throttled)
        # A storm of 60% for 4 s, honoured, leaves the primary idle most of the time: without holds
        # six threads would send it hundreds of requests.
        storm_arrivals = [r for r in arrivals if r.received_at <= min(throttled) + STORM_S]
        assert len(storm_arrivals) < 0.25 * len(run.tally.answers), len(storm_arrivals)
        assert max(a.attempts for a in run.tally.ok) <= 3, "more attempts than 1 + retries + fallback"
        assert all(a.attempts <= 2 for a in run.tally.ok if a.backend == "primary")
        # Each answer's attempts are exactly the requests the providers saw for it, and every retry
        # the sidecar counted is a second request to the primary.
        on_primary = collections.Counter(_request_id_of(r) for r in arrivals)
        on_fallback = collections.Counter(_request_id_of(r) for r in run.fallback.requests)
        for answer in run.tally.ok:
            seen = on_primary[answer.request_id] + on_fallback[answer.request_id]
            assert answer.attempts == seen, (answer, seen)
        retried = sum(n - 1 for n in on_primary.values())
        assert run.extra["retries"] == retried, (run.extra["retries"], retried)
        assert run.transitions()["open"] == 0, "a 429 must not eject the backend"
        assert after_storm and after_storm.count("primary") >= 0.9 * len(after_storm), after_storm[:20]


# --- 3. resets and cuts mid-stream -----------------------------------------------------------------

STREAM_REQUESTS = 30  # per thread
# What the primary does to each stream that reaches it, in a seeded order (arrival order decides who
# gets which). For a prompt "question <id>" the stream has 9 frames: role, 5 content pieces, finish,
# usage, [DONE]; cut_after=7 cuts it after the whole text and finish reason, before usage and [DONE].
BEFORE_FIRST_BYTE = ("reset", "cut_after=0")  # no chunk was sent
AFTER_FIRST_BYTE = ("cut_after=3", "cut_after=7", "truncate_after=5")  # some chunks were sent
STREAM_FAULTS = {"none": 40, "reset": 10, "cut_after=0": 15, "cut_after=3": 15, "cut_after=7": 10,
                 "truncate_after=5": 10}  # fmt: skip


def test_streams_cut_mid_way_end_complete_or_with_an_explicit_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Streamed completions while the primary resets connections before answering, cuts streams
    after a few chunks, or ends them cleanly without the terminal event.

    Allowance: exactly one explicit error event per stream the primary broke after its first chunk
    (the app already has part of the answer, so a retry would duplicate it); zero otherwise. A fault
    before the first chunk must be retried or fall back into a complete answer. No stream may end
    quietly (or with ``[DONE]``) with less than the whole answer.
    """
    resilience = (
        "    timeout: {perAttempt: 3s, total: 8s}\n"
        "    retries: {attempts: 1, backoff: {base: 10ms, max: 50ms}, retryOn: [5xx, connect, reset]}\n"
        # The faults are dealt per request; an ejected primary would just skip them.
        "    circuitBreaker: {consecutiveFailures: 1000, failureRate: 0}\n"
    )
    with scenario("stream-cuts", tmp_path, capsys, resilience, warm_up=_warm_mixed) as run:
        client = _client(run.sidecar)
        deck = [spec for spec, weight in STREAM_FAULTS.items() for _ in range(weight)]
        random.Random(5).shuffle(deck)
        # Enough for every request and its retries; what is left over is never dealt.
        run.primary.queue_faults(*(deck * 5))
        run_threads(
            THREADS, lambda t: [ask_stream(client, run.tally, f"cut-{t}-{i}") for i in range(STREAM_REQUESTS)]
        )

        # Which faults each app request met on the primary, in order (its prompt names it).
        met: dict[str, list[str]] = {}
        for record in run.primary.requests:
            met.setdefault(_request_id_of(record), []).append(str(record.faults))
        fallback_ids = [_request_id_of(r) for r in run.fallback.requests]
        dealt = [spec for specs in met.values() for spec in specs]
        ok, errors = run.tally.ok, run.tally.failed
        # A cut after a few chunks may still be seen by the sidecar before any chunk reached the app
        # (data and FIN arrive in one read; aiohttp then reports only the error): it is retried, a
        # legitimate outcome, counted here apart.
        cut_but_retried = sum(1 for specs in met.values() for spec in specs[:-1] if spec in AFTER_FIRST_BYTE)
        run.extra.update(
            complete_first_try=sum(1 for a in ok if a.attempts == 1),
            complete_after_retry_or_fallback=sum(1 for a in ok if a.attempts > 1),
            explicit_errors=sum(1 for a in errors if a.error == "error_event"),
            mid_stream_cuts_retried_before_first_chunk=cut_but_retried,
            faults_dealt={spec: dealt.count(spec) for spec in STREAM_FAULTS},
            stream_errors_metric=int(
                sum(
                    v
                    for (name, _), v in run.sidecar.metrics().items()
                    if name == "llmroute_stream_errors_total"
                )
            ),
        )
        assert len(run.tally.answers) == THREADS * STREAM_REQUESTS
        assert any(s in AFTER_FIRST_BYTE for s in dealt) and any(s in BEFORE_FIRST_BYTE for s in dealt)
        assert [a for a in errors if a.error != "error_event"] == [], "truncated or other failures"
        assert len(set(fallback_ids)) == len(fallback_ids), "a request fell back twice"
        for answer in run.tally.answers:
            specs = met.get(answer.request_id, [])
            fell_back = answer.request_id in fallback_ids
            # Every attempt the sidecar reported is one the providers saw, and vice versa.
            assert answer.attempts == len(specs) + fell_back, (answer, specs)
            # Every attempt but the last met a fault; a fault before the first byte never ends one.
            assert all(spec != "none" for spec in specs[: len(specs) - (not fell_back)]), (answer, specs)
            if answer.error:
                # Allowed only for a stream the primary broke after sending chunks; the part relayed
                # is a prefix of the answer (all of it for cut_after=7: only the error event says
                # that usage and the end never came), never anything else.
                assert not fell_back and specs and specs[-1] in AFTER_FIRST_BYTE, (answer, specs)
                assert "broke" in answer.detail, answer
                full = expected_text("openai", _prompt(answer.request_id))
                assert full.startswith(answer.relayed), answer
            elif not fell_back:
                assert specs[-1] == "none", (answer, specs)
        assert errors, "no cut reached the app: the scenario did not test what it says"
        assert run.extra["stream_errors_metric"] == len(errors)
        # A broken stream is accounted as one: its record says so, and charges what was relayed.
        lines = run.sidecar.audit_of({answer.request_id for answer in errors})
        for answer in errors:
            line = lines[answer.request_id]
            assert (line["outcome"], line["status"], line["backend"]) == ("stream_error", 502, "primary")
            assert line["output_tokens"] > 0 or not answer.relayed, (answer, line)


def _request_id_of(record: Any) -> str:
    """The app's request id, from the prompt a provider received (``question <id>``)."""
    prompt = record.json()["messages"][-1]["content"]
    assert isinstance(prompt, str) and prompt.startswith("question "), prompt
    return prompt.removeprefix("question ")


# --- 4. hangs ---------------------------------------------------------------------------------------

HANG_REQUESTS = 8  # per thread, streaming and not, alternately
PER_ATTEMPT_S = 0.8
TOTAL_S = 3.0
MARGIN_S = 0.7  # the sidecar's own time on a busy 2-core machine, on top of a timeout
HANG_FAULTS = {"none": 50, "hang": 35, "slow_stream_ms=30000": 15}


def test_hanging_primary_times_out_and_falls_back_in_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The primary hangs before answering (``hang``), or sends a stream's first chunk and then stalls
    for 30 s (``slow_stream_ms=30000``), for a seeded share of requests.

    Allowance: one explicit error per stalled stream (its first chunk reached the app, so it cannot
    move), arriving by the total timeout (3 s) + margin; zero otherwise. A hang before the first byte
    must hit the per-attempt timeout (0.8 s) and be served by the fallback within it + margin. No
    request waits for the app's own 20 s timeout.
    """
    resilience = (
        f"    timeout: {{perAttempt: {int(PER_ATTEMPT_S * 1000)}ms, total: {TOTAL_S:g}s}}\n"
        # No retry on timeout: a hung backend gets one attempt, then the fallback.
        "    retries: {attempts: 1, backoff: {base: 10ms, max: 50ms}, retryOn: [5xx, connect]}\n"
        # Every request meets its dealt fault (an ejected primary would hide the timeout path).
        "    circuitBreaker: {consecutiveFailures: 1000, failureRate: 0}\n"
    )
    with scenario("hangs", tmp_path, capsys, resilience, warm_up=_warm_mixed) as run:
        client = _client(run.sidecar)
        deck = [spec for spec, weight in HANG_FAULTS.items() for _ in range(weight)]
        random.Random(3).shuffle(deck)
        run.primary.queue_faults(*deck)

        def work(t: int) -> None:
            for i in range(HANG_REQUESTS):
                (ask_stream if i % 2 else ask)(client, run.tally, f"hang-{t}-{i}")

        run_threads(THREADS, work)

        met = {_request_id_of(r): str(r.faults) for r in run.primary.requests}
        answers = {a.request_id: a for a in run.tally.answers}
        hung = [answers[i] for i, spec in met.items() if spec == "hang"]
        stalled = [answers[i] for i, spec in met.items() if spec.startswith("slow") and answers[i].stream]
        clean = [a for a in run.tally.answers if a not in hung and a not in stalled]
        run.extra.update(
            hung=len(hung),
            stalled_streams=len(stalled),
            hung_fallback_s=f"{min(a.seconds for a in hung):.2f}..{max(a.seconds for a in hung):.2f}",
            stalled_error_s=f"{min(a.seconds for a in stalled):.2f}..{max(a.seconds for a in stalled):.2f}"
            if stalled
            else "-",
            slowest_s=round(max(a.seconds for a in run.tally.answers), 2),
        )
        assert len(met) == len(run.primary.requests), "no request was retried on the primary"
        assert hung and stalled, met
        assert [a for a in run.tally.failed if a not in stalled] == [], run.tally.failed[:3]
        for answer in hung:
            assert not answer.error and answer.backend == "fallback" and answer.attempts == 2, answer
            # The per-attempt timeout fired (not sooner), and the fallback answered promptly after.
            assert PER_ATTEMPT_S - 0.05 <= answer.seconds <= PER_ATTEMPT_S + MARGIN_S, answer
        for answer in stalled:
            assert answer.error == "error_event" and "timeout" in answer.detail, answer
            assert TOTAL_S - 0.3 <= answer.seconds <= TOTAL_S + MARGIN_S, answer
        assert all(not a.error and a.backend == "primary" for a in clean), clean[:3]
        assert all(a.seconds < 2 * PER_ATTEMPT_S for a in clean), max(a.seconds for a in clean)


# --- 5. slow upstreams ------------------------------------------------------------------------------

SLOW_REQUESTS = 8  # per thread, streaming and not, alternately
LATENCY_MS = 400
CADENCE_MS = 60
STREAM_GAPS = 8  # 9 frames for a "question <id>" prompt (see scenario 3)
SLOW_MARGIN_S = 0.4  # the sidecar's share of p99 on a busy 2-core machine


def test_slow_primary_completes_within_its_configured_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The primary waits 400 ms before its headers and 60 ms between stream chunks.

    Allowance: none, and no fallback: slowness within the route's timeouts (3 s per attempt) is not a
    failure. p99 stays within the upstream's own time + 0.4 s (non-streaming 0.4 s, streams
    0.4 + 8 x 0.06 s), and streams are relayed chunk by chunk (the app's first content arrives long
    before the last), not buffered.
    """
    resilience = (
        "    timeout: {perAttempt: 3s, total: 6s}\n"
        "    retries: {attempts: 1, backoff: {base: 10ms, max: 50ms}, retryOn: [5xx, connect, timeout]}\n"
    )
    with scenario("slow", tmp_path, capsys, resilience, warm_up=_warm_mixed) as run:
        client = _client(run.sidecar)
        run.primary.set_faults(f"latency_ms={LATENCY_MS},slow_stream_ms={CADENCE_MS}")

        def work(t: int) -> None:
            for i in range(SLOW_REQUESTS):
                (ask_stream if i % 2 else ask)(client, run.tally, f"slow-{t}-{i}")

        run_threads(THREADS, work)

        plain = [a.seconds for a in run.tally.answers if not a.stream]
        streams = [a for a in run.tally.answers if a.stream]
        stream_s = [a.seconds for a in streams]
        plain_floor = LATENCY_MS / 1000
        stream_floor = plain_floor + STREAM_GAPS * CADENCE_MS / 1000
        run.extra.update(
            p50_p99_s=f"plain {percentile(plain, 0.5):.2f}/{percentile(plain, 0.99):.2f}, "
            f"stream {percentile(stream_s, 0.5):.2f}/{percentile(stream_s, 0.99):.2f}",
            bound_p99_s=f"plain {plain_floor + SLOW_MARGIN_S:.2f}, stream {stream_floor + SLOW_MARGIN_S:.2f}",
        )
        assert not run.tally.failed, run.tally.failed[:3]
        assert run.fallback.requests == [], "slowness is not a failure"
        assert all(a.attempts == 1 for a in run.tally.answers)
        # The faults really applied (a floor), and the sidecar adds little on top (the bound).
        assert min(plain) >= plain_floor and min(stream_s) >= stream_floor
        assert percentile(plain, 0.99) <= plain_floor + SLOW_MARGIN_S
        assert percentile(stream_s, 0.99) <= stream_floor + SLOW_MARGIN_S
        for answer in streams:
            assert answer.first_chunk_s is not None
            # Relayed as it comes: the first content arrives at least 5 gaps before the end.
            assert answer.seconds - answer.first_chunk_s >= 5 * CADENCE_MS / 1000, answer
