"""Batch jobs on real processes: sidecars sharing a real Redis, the official OpenAI SDK as the app,
fake providers on real sockets.

Interactive requests keep their latency while a batch runs: p99 beside a running batch stays within
20% of p99 without one (the median over five interleaved rounds; the fake provider a process of its own).

Two sidecars of one workload work on a 160-line batch. One is stopped half-way: with SIGTERM it
finishes the lines it holds and takes no more, so no line reaches the provider twice; with SIGKILL
the lines it held are taken over by the other sidecar once their claim goes stale, so no line is
lost; those few (at most its batch concurrency) may reach the provider a second time, but each
line is written to the output once and counted once.
"""

from __future__ import annotations

import collections
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from .upstream_support import ProviderLoop, SidecarProcess

LINES = 160
CONCURRENCY = 4
CLAIM_IDLE_S = 2.0
ROUNDS = 5  # interleaved rounds of the interactive-latency test


def _route(endpoint: str) -> str:
    return f"""\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: bulk, namespace: demo}}
spec:
  models:
  - name: chat
    backends: [gpt]
  backends:
  - name: gpt
    provider: openai-compatible
    model: model-gpt
    endpoint: {endpoint}
    pricing: {{inputPerMillion: 2, outputPerMillion: 8}}
  resilience:
    retries: {{attempts: 0, backoff: {{base: 5ms, max: 10ms}}}}
"""


def _input(lines: int = LINES) -> bytes:
    rows = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "chat", "messages": [{"role": "user", "content": f"bulk question {i}"}]},
        }
        for i in range(lines)
    ]
    return b"\n".join(orjson.dumps(r) for r in rows)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_sidecar_stopped_mid_batch_loses_no_line_and_writes_none_twice(
    how: str, tmp_path: Path, redis_url: str
) -> None:
    args = (
        "--redis-url", redis_url, "--batch-concurrency", str(CONCURRENCY),
        "--batch-claim-idle-seconds", str(CLAIM_IDLE_S),
    )  # fmt: skip
    with ProviderLoop() as loop:  # both sidecars: one workload (no pod name), so they share its batches
        gpt = loop.provider("openai-compatible", faults="latency_ms=60")
        first = SidecarProcess(tmp_path / "a", _route(gpt.base_url), args)
        second = SidecarProcess(tmp_path / "b", _route(gpt.base_url), args)
        first.start()
        second.start()
        try:
            _scenario(how, first, second, gpt)
        finally:
            if first.process is not None:
                first.stop()
            second.stop()


def _scenario(how: str, first: SidecarProcess, second: SidecarProcess, gpt: Any) -> None:
    app = openai.OpenAI(base_url=first.base_url, api_key="unused", max_retries=0)
    other = openai.OpenAI(base_url=second.base_url, api_key="unused", max_retries=0)
    uploaded = app.files.create(file=("bulk.jsonl", _input()), purpose="batch")
    batch = app.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 30
    while (
        counts := other.batches.retrieve(batch.id).request_counts
    ) is not None and counts.completed < LINES // 3:
        assert time.monotonic() < deadline, "the batch did not get going"
        time.sleep(0.05)
    assert first.process is not None
    stopped_at = time.monotonic()
    if how == "SIGKILL":
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        first.process = None
    else:
        first.stop()  # SIGTERM; also checks its log has no traceback
    # The other sidecar finishes the batch, taking over what the stopped one held.
    deadline = time.monotonic() + 60
    while (done := other.batches.retrieve(batch.id)).status not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"batch stuck at {done.request_counts} after the {how}"
        time.sleep(0.1)
    finished_after = time.monotonic() - stopped_at
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
        LINES,
        LINES,
        0,
    )
    output = [orjson.loads(line) for line in other.files.content(done.output_file_id or "").text.splitlines()]
    ids = [line["custom_id"] for line in output]
    assert ids == [f"line-{i}" for i in range(LINES)]  # every line once, in input order
    seen = collections.Counter(
        orjson.loads(r.body)["messages"][0]["content"]
        for r in gpt.requests
        if r.path.endswith("/chat/completions")
    )
    assert set(seen) == {f"bulk question {i}" for i in range(LINES)}
    twice = sorted(k for k, n in seen.items() if n > 1)
    reclaimed = second.metric("llmroute_batch_lines_total", event="reclaimed")
    print(f"{how}: finished {finished_after:.1f}s after the stop; {len(twice)} lines reached the provider twice; "
          f"{reclaimed:.0f} taken over")  # fmt: skip
    if how == "SIGTERM":
        assert twice == [] and reclaimed == 0
    else:
        assert len(twice) <= CONCURRENCY and reclaimed >= len(twice)
        assert all(n <= 2 for n in seen.values())


def _fake_process(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """An OpenAI-compatible fake in its own process (40 ms per answer), so that the extra work a
    batch gives it competes with neither the app nor the sidecar for a GIL."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "fake.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "llmroute_fakes", "--protocol", "openai-compatible", "--port", "0", "--latency-ms", "40"],
        stdout=subprocess.PIPE, stderr=log,
    )  # fmt: skip
    assert process.stdout is not None
    url = process.stdout.readline().decode().strip()
    assert url.startswith("http"), (workdir / "fake.log").read_text()[-2000:]
    return process, url + "/v1"


def test_interactive_p99_holds_while_a_batch_runs(tmp_path: Path, redis_url: str) -> None:
    fake, endpoint = _fake_process(tmp_path / "fake")
    sidecar = SidecarProcess(tmp_path / "sidecar", _route(endpoint), ("--redis-url", redis_url))
    try:
        sidecar.start()
        app = openai.OpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0)

        def one(i: int) -> float:
            started = time.perf_counter()
            app.chat.completions.create(model="chat", messages=[{"role": "user", "content": f"live {i}"}])
            return time.perf_counter() - started

        def interactive(count: int) -> list[float]:  # four app threads, closed loop
            with ThreadPoolExecutor(4) as pool:
                return list(pool.map(one, range(count)))

        interactive(40)  # warm the pools

        def p99(values: list[float]) -> float:
            return statistics.quantiles(values, n=100)[98]

        ratios: list[float] = []
        alone: list[float] = []
        beside: list[float] = []
        completed = 0
        for _ in range(ROUNDS):  # interleaved, so drift on this shared machine hits both alike
            without = interactive(160)
            uploaded = app.files.create(file=("bulk.jsonl", _input(800)), purpose="batch")
            batch = app.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            time.sleep(0.3)
            under = interactive(160)
            running = app.batches.retrieve(batch.id)
            assert running.status == "in_progress" and running.request_counts is not None
            completed += running.request_counts.completed
            app.batches.cancel(batch.id)
            deadline = time.monotonic() + 20
            while app.batches.retrieve(batch.id).status != "cancelled":
                assert time.monotonic() < deadline, "the cancelled batch did not end"
                time.sleep(0.1)
            ratios.append(p99(under) / p99(without))
            alone += without
            beside += under
        ratio = statistics.median(ratios)
        print(f"interactive p99 alone {p99(alone) * 1000:.1f} ms, beside a batch {p99(beside) * 1000:.1f} ms "
              f"(pooled {p99(beside) / p99(alone):.2f}x; per round {', '.join(f'{r:.2f}' for r in ratios)}, "
              f"median {ratio:.2f}x; p50 {statistics.median(alone) * 1000:.1f} / {statistics.median(beside) * 1000:.1f} ms); "
              f"{completed} batch lines answered meanwhile")  # fmt: skip
        assert completed >= 100, "the batches hardly ran beside the live traffic"
        # The median over interleaved rounds: one round hit by a burst of foreign load on this shared
        # 2-core machine must not decide (a CI run once saw one such round at 1.27x pooled).
        assert ratio <= 1.2, f"interactive p99 grew {ratio:.2f}x (median of {ROUNDS} rounds) beside the batch"
    finally:
        sidecar.stop()
        fake.terminate()
        fake.wait(timeout=10)


def _provider_route(gpt: Any, claude: Any) -> str:
    return f"""\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {{name: bulk, namespace: demo}}
spec:
  models:
  - name: chat
    strategy: weighted
    split: [{{backend: gpt, weight: 50}}, {{backend: claude, weight: 50}}]
  backends:
  - name: gpt
    provider: openai
    model: gpt-4o
    endpoint: {gpt.base_url}
    credentialsRef: {{name: keys, key: gpt}}
    pricing: {{inputPerMillion: 2, outputPerMillion: 8}}
  - name: claude
    provider: anthropic
    model: claude-test
    endpoint: {claude.base_url}
    credentialsRef: {{name: keys, key: claude}}
    pricing: {{inputPerMillion: 3, outputPerMillion: 15}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: demo}}
stringData: {{gpt: sk-gpt, claude: sk-ant}}
"""


@pytest.mark.parametrize("when", ["creating", "submitted"])
def test_a_sidecar_killed_mid_provider_batch_loses_no_line_and_submits_none_twice(
    when: str, tmp_path: Path, redis_url: str
) -> None:
    """SIGKILL while the provider batches run ("submitted"), or while the create calls wait for
    their answers, the batches already created at the providers ("creating"). A new sidecar process
    takes the submissions over once their owner key lapses, finds the batches at the providers (the
    OpenAI one by our id in its metadata, the Anthropic one by creation time and size), polls them
    and writes every line once: no provider gets a second batch, and no line runs live."""
    faults = "batch_ms=800,batch_ack_ms=5000" if when == "creating" else "batch_ms=4000"
    args = ("--redis-url", redis_url, "--batch-claim-idle-seconds", str(CLAIM_IDLE_S),
            "--batch-provider-poll-seconds", "0.3")  # fmt: skip
    lines = 100
    with ProviderLoop() as loop:
        gpt = loop.provider("openai", faults=faults)
        claude = loop.provider("anthropic", faults=faults)
        first = SidecarProcess(tmp_path / "a", _provider_route(gpt, claude), args)
        first.start()
        second = SidecarProcess(tmp_path / "b", _provider_route(gpt, claude), args)
        try:
            app = openai.OpenAI(base_url=first.base_url, api_key="unused", max_retries=0)
            uploaded = app.files.create(file=("bulk.jsonl", _input(lines)), purpose="batch")
            batch = app.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )

            def creates() -> tuple[int, int]:
                return (
                    sum(1 for r in gpt.requests if r.method == "POST" and r.path == "/v1/batches"),
                    sum(
                        1 for r in claude.requests if r.method == "POST" and r.path == "/v1/messages/batches"
                    ),
                )

            deadline = time.monotonic() + 30
            while creates() != (1, 1):
                assert time.monotonic() < deadline, f"the provider batches were not created: {creates()}"
                time.sleep(0.02)
            if when == "submitted":
                time.sleep(0.5)  # their answers are in; the batches run for 4 s
            assert first.process is not None
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
            first.process = None
            killed_at = time.monotonic()
            second.start()
            other = openai.OpenAI(base_url=second.base_url, api_key="unused", max_retries=0)
            deadline = time.monotonic() + 60
            while (done := other.batches.retrieve(batch.id)).status not in (
                "completed",
                "failed",
                "cancelled",
            ):
                assert time.monotonic() < deadline, f"batch stuck at {done.request_counts} after the kill"
                time.sleep(0.1)
            finished_after = time.monotonic() - killed_at
            assert done.status == "completed" and done.request_counts is not None
            assert (done.request_counts.completed, done.request_counts.failed) == (lines, 0)
            output = [
                orjson.loads(x) for x in other.files.content(done.output_file_id or "").text.splitlines()
            ]
            assert [line["custom_id"] for line in output] == [f"line-{i}" for i in range(lines)]
            assert creates() == (1, 1)  # neither provider got a second batch
            live = [
                r
                for r in gpt.requests + claude.requests
                if r.path in ("/v1/chat/completions", "/v1/messages")
            ]
            assert live == []
            records = second.audit_when(lines, where=lambda entry: bool(entry.get("batch_api")))
            assert len(records) == lines and len({r["request_id"] for r in records}) == lines
            cost = sum(r["cost_usd"] for r in records)
            prices = {"gpt": (2, 8), "claude": (3, 15)}
            micro = [
                r["input_tokens"] * prices[r["backend"]][0] + r["output_tokens"] * prices[r["backend"]][1]
                for r in records
            ]
            listed = sum(micro) / 1e6
            print(f"{when}: SIGKILL, new sidecar done {finished_after:.1f}s later; 1 batch per provider; "
                  f"{lines} lines once; cost ${cost:.6f} (list ${listed:.6f}); "
                  f"{second.metric('llmroute_batch_lines_total', event='adopted'):.0f} submissions taken over")  # fmt: skip
            assert (
                abs(cost - sum(round(m / 2) for m in micro) / 1e6) < 1e-9
            )  # each line at half its list price
            assert second.metric("llmroute_batch_lines_total", event="adopted") == 2
        finally:
            if first.process is not None:
                first.stop()
            second.stop()
