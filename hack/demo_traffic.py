"""The live part of ``make demo``: traffic on three sidecars while providers misbehave, shown live.

Kinds of traffic, each its own task: normal chat, a premium tier rule, a code-generation rule, an
EU-only tenant (its own route, restricted to EU regions), repeated prompts (cache hits) and a tenant
burst that crosses a soft and then a hard budget. Meanwhile the self-hosted vLLM is flaky throughout
and Anthropic goes down and comes back; pollers scrape each sidecar's breaker states and the budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai
from rich.console import Console
from rich.live import Live
from rich.text import Text

from demo_stack import NS, PRINT, expect, http_get, say, show
from demo_view import Outcome, Traffic, budget_rows, parse_breakers, plain_line, render
from llmroute_fakes.server import FakeProvider
from llmroute_operator.devcluster.kubectl import Kubectl

DURATION = 30.0
DOWN_AT, UP_AT = 7.0, 17.0
EU_REGIONS = {"eu-west-1", "eu-central-1"}


@dataclass(frozen=True)
class Sidecar:
    name: str
    base_url: str
    admin: str  # http://host:port of the admin server


@dataclass(frozen=True)
class Kind:
    name: str
    sidecar: str
    pause: float
    expected_first: str
    headers: dict[str, str]
    prompts: tuple[str, ...] = ()  # fixed prompts to repeat; empty: a new prompt each time


KINDS = (
    Kind("normal", "s0", 0.25, "gpt4o", {}),
    Kind("normal", "s1", 0.25, "gpt4o", {}),
    Kind("premium", "s1", 0.4, "claude", {"x-llmroute-tier": "premium"}),
    Kind("code", "s0", 0.4, "vllm", {"x-llmroute-task": "code_generation"}),
    Kind("eu-only", "eu", 0.3, "claude", {}),
    Kind("repeat", "s1", 0.4, "gpt4o", {}, ("What is llmroute?", "Which regions?", "Why a sidecar?")),
)


async def _send(
    client: openai.AsyncOpenAI, traffic: Traffic, kind: Kind, prompt: str, headers: dict[str, str]
) -> Outcome:
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": prompt}], max_tokens=20, extra_headers=headers
        )
        h, status = raw.headers, raw.http_response.status_code
    except openai.APIStatusError as exc:
        h, status = exc.response.headers, exc.status_code
    except openai.APIConnectionError:
        h, status = {}, 0  # type: ignore[assignment]
    outcome = Outcome(
        kind=kind.name, sidecar=kind.sidecar, status=status, expected_first=kind.expected_first,
        backend=h.get("x-llmroute-backend"), region=h.get("x-llmroute-region"),
        attempts=int(h.get("x-llmroute-attempts") or 1), cache=h.get("x-llmroute-cache"),
        downgraded=bool(h.get("x-llmroute-downgraded")),
    )  # fmt: skip
    traffic.record(outcome)
    return outcome


async def _loop(client: openai.AsyncOpenAI, traffic: Traffic, kind: Kind, stop: asyncio.Event) -> None:
    for n in itertools.count():
        if stop.is_set():
            return
        prompt = kind.prompts[n % len(kind.prompts)] if kind.prompts else f"{kind.name} question {n}"
        user = f"{kind.name}-{kind.sidecar}-{n}"  # the route allows 5 requests a minute per user
        await _send(client, traffic, kind, prompt, {**kind.headers, "x-llmroute-user": user})
        await asyncio.sleep(kind.pause)


async def _burst(client: openai.AsyncOpenAI, traffic: Traffic) -> None:
    """Tenant 'burst' (soft 0.30 USD: downgrade to the small tier; hard 0.60 USD: refuse)."""
    await asyncio.sleep(2)
    say("budget: tenant 'burst' (soft 0.30 USD: downgrade to the small tier; hard 0.60 USD: refuse)")
    kind = Kind("burst", "s0", 0.3, "gpt4o", {"x-llmroute-tenant": "burst"})
    downgraded = refused = False
    for i in range(60):
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="chat",
                messages=[{"role": "user", "content": f"burst question {i}"}],
                max_tokens=20,
                extra_headers={"x-llmroute-tenant": "burst", "x-llmroute-user": f"u{i}"},
            )
        except openai.RateLimitError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            show(
                f"burst {i}: 429 {body.get('code')} (budget {body.get('budget')}, resets {body.get('reset_at')})"
            )
            traffic.record(Outcome("burst", "s0", 429, "gpt4o"))
            refused = body.get("code") == "budget_exceeded"
            break
        note = raw.headers.get("x-llmroute-downgraded") or ""
        downgraded = downgraded or bool(note)
        backend = raw.headers.get("x-llmroute-backend")
        traffic.record(Outcome("burst", "s0", 200, "gpt4o", backend, raw.headers.get("x-llmroute-region"),
                               int(raw.headers.get("x-llmroute-attempts") or 1), None, bool(note)))  # fmt: skip
        show(f"burst {i}: {backend:6} ${raw.headers.get('x-llmroute-cost-usd')} {note}")
        await asyncio.sleep(kind.pause)  # spend reaches the operator; its state comes back with the next push
    expect(downgraded, "past the soft limit, requests went to the small tier (x-llmroute-downgraded)")
    expect(refused, "past the hard limit, requests were refused with 429 budget_exceeded")


async def _every(period: float, stop: asyncio.Event, work: Callable[[], Awaitable[None]]) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            await work()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)


async def _scenario(traffic: Traffic, providers: dict[str, FakeProvider], started: float) -> None:
    providers["vllm"].set_faults(fail_rate=0.3, seed=7)
    traffic.faults["openai-compatible"] = "flaky: 30% 503"
    traffic.phase = "all providers up; vLLM flaky (30% 503)"
    say("traffic on three sidecars; the self-hosted vLLM (eu-central-1) fails 30% of requests")
    await asyncio.sleep(DOWN_AT - (time.monotonic() - started))
    providers["anthropic"].set_faults("status=503")
    traffic.faults["anthropic"] = "down: 503"
    traffic.phase = "Anthropic (eu-west-1) is DOWN: premium and EU traffic fail over"
    say(traffic.phase)
    await asyncio.sleep(UP_AT - (time.monotonic() - started))
    providers["anthropic"].set_faults(None)
    traffic.faults.pop("anthropic", None)
    traffic.phase = "Anthropic is back: breakers probe (half-open) and close"
    say(traffic.phase)


async def live(
    sidecars: list[Sidecar], providers: dict[str, FakeProvider], kubectl: Kubectl, console: Console
) -> Traffic:
    traffic = Traffic()
    stop = asyncio.Event()
    by_name = {s.name: s for s in sidecars}
    clients = {
        s.name: openai.AsyncOpenAI(base_url=s.base_url, api_key="unused", max_retries=0) for s in sidecars
    }

    async def poll_breakers() -> None:
        for s in sidecars:
            status, body = await asyncio.to_thread(http_get, f"{s.admin}/metrics")
            if status == 200:
                traffic.set_breakers(s.name, parse_breakers(body))

    async def poll_budgets() -> None:
        traffic.budgets = budget_rows(await asyncio.to_thread(kubectl.json, "get", "llmb", "-n", NS))

    started = time.monotonic()
    tasks = [
        asyncio.create_task(_loop(clients[k.sidecar], traffic, k, stop))
        for k in KINDS
        if k.sidecar in by_name
    ]
    tasks += [
        asyncio.create_task(_every(0.5, stop, poll_breakers)),
        asyncio.create_task(_every(1.5, stop, poll_budgets)),
    ]
    burst = asyncio.create_task(_burst(clients["s0"], traffic))
    last_line = 0.0

    async def run_scenario() -> None:
        nonlocal last_line
        scenario = asyncio.create_task(_scenario(traffic, providers, started))
        while (elapsed := time.monotonic() - started) < DURATION or not burst.done():
            traffic.elapsed = elapsed
            if not console.is_terminal and elapsed - last_line >= 3:
                last_line = elapsed
                show(plain_line(traffic))
            await asyncio.sleep(0.1)
        await scenario
        await burst

    if console.is_terminal:
        PRINT.append(lambda text: console.print(Text.from_ansi(text)))
        try:
            with Live(get_renderable=lambda: render(traffic), console=console, refresh_per_second=4):
                await run_scenario()
        finally:
            PRINT.pop()
    else:
        await run_scenario()
    stop.set()
    await asyncio.gather(*tasks)
    await poll_breakers()
    await poll_budgets()
    if not console.is_terminal:
        show(plain_line(traffic))
    for client in clients.values():
        await client.close()
    return traffic


def check(traffic: Traffic) -> None:
    """The expected behaviours of the live part."""
    kinds = traffic.kinds
    say("what the live traffic showed")
    get: Callable[[str], Any] = lambda name: kinds.get(name)  # noqa: E731
    premium, code, eu, repeat = get("premium"), get("code"), get("eu-only"), get("repeat")
    expect(bool(premium) and premium.backends["claude"] > 0, "x-llmroute-tier: premium went to claude (rule)")
    expect(bool(code) and code.backends["vllm"] > 0, "x-llmroute-task: code_generation went to vllm (rule)")
    expect(bool(code) and code.failovers > 0, "the flaky vLLM caused retries/failovers on code requests")
    expect(
        bool(premium) and premium.failovers > 0 and bool(eu) and eu.failovers > 0,
        "while Anthropic was down, premium and EU requests failed over",
    )
    expect("claude" in traffic.ever_open, "claude's circuit breaker opened while Anthropic was down")
    expect(
        bool(eu) and eu.ok > 0 and set(eu.regions) <= EU_REGIONS and "gpt4o" not in eu.backends,
        f"the EU-only route answered only from EU regions ({dict(eu.regions) if eu else {}})",
    )
    expect(bool(repeat) and repeat.cache_hits > 0, "repeated prompts were answered from the cache")
