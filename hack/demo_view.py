"""What ``make demo`` shows while traffic flows: counters, breaker states, spend, rendered live.

Pure bookkeeping (``Traffic``, ``parse_breakers``, ``budget_rows``) plus two renderings: a rich
table for a terminal and one plain progress line for logs and CI.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

#: Where each backend lives: (provider, region).
BACKENDS: dict[str, tuple[str, str]] = {
    "gpt4o": ("openai", "us-east-1"),
    "mini": ("openai", "us-east-1"),
    "claude": ("anthropic", "eu-west-1"),
    "vllm": ("openai-compatible", "eu-central-1"),
}
_BREAKER = re.compile(
    r"^llmroute_circuit_breaker_state\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.eE+-]+)\s*$", re.M
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Outcome:
    """One request the demo's app sent, as the app saw it."""

    kind: str  # normal, premium, code, eu, repeat, burst
    sidecar: str
    status: int
    expected_first: str
    backend: str | None = None
    region: str | None = None
    attempts: int = 1
    cache: str | None = None
    downgraded: bool = False

    @property
    def failover(self) -> bool:
        """Answered by the provider, but not at the first try of the first candidate."""
        if self.status != 200 or self.cache == "hit" or self.downgraded:
            return False
        return self.attempts > 1 or (self.backend is not None and self.backend != self.expected_first)


@dataclass
class KindStats:
    sent: int = 0
    ok: int = 0
    failovers: int = 0
    cache_hits: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    backends: Counter[str] = field(default_factory=Counter)
    regions: Counter[str] = field(default_factory=Counter)


@dataclass
class Traffic:
    """Everything the view shows; the traffic tasks and pollers write, the renderers read."""

    kinds: dict[str, KindStats] = field(default_factory=dict)
    served: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sidecar, backend)
    #: sidecar -> (route, backend) -> state
    breakers: dict[str, dict[tuple[str, str], str]] = field(default_factory=dict)
    #: backends whose breaker was seen open (or half-open) on some sidecar
    ever_open: set[str] = field(default_factory=set)
    budgets: list[dict[str, str]] = field(default_factory=list)
    faults: dict[str, str] = field(default_factory=dict)  # provider -> description
    phase: str = "starting"
    elapsed: float = 0.0

    def record(self, outcome: Outcome) -> None:
        stats = self.kinds.setdefault(outcome.kind, KindStats())
        stats.sent += 1
        stats.statuses[outcome.status] += 1
        if outcome.status == 200:
            stats.ok += 1
        if outcome.cache == "hit":
            stats.cache_hits += 1
        if outcome.failover:
            stats.failovers += 1
        if outcome.backend:
            stats.backends[outcome.backend] += 1
            self.served[(outcome.sidecar, outcome.backend)] += 1
        if outcome.region:
            stats.regions[outcome.region] += 1

    def set_breakers(self, sidecar: str, states: dict[tuple[str, str], str]) -> None:
        self.breakers[sidecar] = states
        self.ever_open.update(backend for (_, backend), s in states.items() if s != "closed")

    def total(self, attribute: str) -> int:
        return sum(int(getattr(stats, attribute)) for stats in self.kinds.values())


def parse_breakers(metrics: str) -> dict[tuple[str, str], str]:
    """(route, backend) -> the breaker state whose gauge is 1, from a Prometheus text exposition."""
    states: dict[tuple[str, str], str] = {}
    for match in _BREAKER.finditer(metrics):
        labels = dict(_LABEL.findall(match["labels"]))
        if float(match["value"]) >= 1 and "backend" in labels:
            states[(labels.get("route", ""), labels["backend"])] = labels.get("state", "?")
    return states


def budget_rows(llmb_list: dict[str, Any]) -> list[dict[str, str]]:
    """One row per LLMBudget of ``kubectl get llmb -o json``: name, spent, soft, hard, state, percent."""
    rows: list[dict[str, str]] = []
    for item in llmb_list.get("items", []):
        spec, status = item.get("spec", {}), item.get("status") or {}
        limits = spec.get("limits", {})
        spent = str(status.get("spent") or "0")
        try:
            percent = f"{100 * Decimal(spent) / Decimal(str(limits.get('hard'))):.0f}%"
        except (InvalidOperation, ZeroDivisionError, TypeError):
            percent = "?"
        rows.append(
            {
                "name": item["metadata"]["name"],
                "spent": spent,
                "soft": str(limits.get("soft", "")),
                "hard": str(limits.get("hard", "")),
                "state": str(status.get("state") or "Normal"),
                "percent": percent,
            }
        )
    return rows


_STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}
_BUDGET_STYLE = {"Normal": "green", "SoftLimited": "yellow", "Exhausted": "bold red"}


def _bar(row: dict[str, str]) -> ProgressBar | str:
    try:
        spent, hard = float(row["spent"]), float(row["hard"])
    except ValueError:
        return "?"
    return ProgressBar(total=hard, completed=min(spent, hard), width=24)


def render(traffic: Traffic) -> Group:
    """The live view: backends (served and breaker state per sidecar), traffic by kind, and spend."""
    sidecars = list(traffic.breakers) or sorted({s for s, _ in traffic.served})
    backends = Table(
        title="backends: answered / circuit breaker, per sidecar",
        title_justify="left",
        caption="s0, s1: pods chatbot-0/1 (route chat) · eu: pod eu-chatbot-0 (route chat-eu, EU regions only)",
        caption_justify="left",
    )
    for column in ("backend", "provider", "region", "provider fault", *sidecars):
        backends.add_column(column)
    for name, (provider, region) in BACKENDS.items():
        cells = []
        for sidecar in sidecars:
            states = traffic.breakers.get(sidecar, {})
            state = next((s for (_, b), s in states.items() if b == name), "closed" if states else "-")
            cells.append(
                Text.assemble(
                    f"{traffic.served[(sidecar, name)]:4} ", (state, _STATE_STYLE.get(state, "dim"))
                )
            )
        fault = traffic.faults.get(provider, "ok")
        style = "green" if fault == "ok" else "bold red" if "down" in fault else "yellow"
        backends.add_row(name, provider, region, Text(fault, style=style), *cells)
    kinds = Table(title="requests by kind", title_justify="left")
    for column in ("kind", "sent", "ok", "errors", "failovers", "cache hits", "backends", "regions"):
        kinds.add_column(column)
    for kind, stats in traffic.kinds.items():
        errors = ", ".join(f"{n}x{code}" for code, n in sorted(stats.statuses.items()) if code != 200)
        kinds.add_row(
            kind,
            str(stats.sent),
            str(stats.ok),
            errors or "-",
            str(stats.failovers),
            str(stats.cache_hits),
            " ".join(f"{b}:{n}" for b, n in stats.backends.most_common()),
            " ".join(f"{r}:{n}" for r, n in stats.regions.most_common()),
        )
    spend = Table(title="spend: LLMBudget status.spent against spec.limits", title_justify="left")
    for column in ("budget", "spent", "soft", "hard", "", "of hard", "state"):
        spend.add_column(column)
    for row in traffic.budgets:
        spend.add_row(
            row["name"], row["spent"], row["soft"], row["hard"], _bar(row), row["percent"],
            Text(row["state"], style=_BUDGET_STYLE.get(row["state"], "")),
        )  # fmt: skip
    header = Text.assemble(
        ("llmroute demo ", "bold"), f"t={traffic.elapsed:4.1f}s  ", (traffic.phase, "bold cyan"),
        f"\nrequests {traffic.total('sent')}   ok {traffic.total('ok')}   failovers {traffic.total('failovers')}"
        f"   cache hits {traffic.total('cache_hits')}",
    )  # fmt: skip
    return Group(header, backends, kinds, spend)


def plain_line(traffic: Traffic) -> str:
    """One progress line for a log: totals, breakers not closed, faults and spend."""
    not_closed = sorted(
        f"{backend}@{sidecar}:{state}"
        for sidecar, states in traffic.breakers.items()
        for (_, backend), state in states.items()
        if state != "closed"
    )
    spend = " ".join(f"{r['name']}={r['spent']}/{r['hard']}({r['state']})" for r in traffic.budgets)
    return (
        f"t={traffic.elapsed:4.1f}s requests={traffic.total('sent')} ok={traffic.total('ok')}"
        f" failovers={traffic.total('failovers')} cache_hits={traffic.total('cache_hits')}"
        f" breakers_not_closed=[{' '.join(not_closed)}] spend: {spend}"
    )
