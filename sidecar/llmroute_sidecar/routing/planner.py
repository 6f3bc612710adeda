"""Plan one request: which backends may answer it, in which order, with which body.

:func:`plan` is the single entry point the router service calls, once per request, before the
attempt loop. It runs these steps, each in its own module:

1. the first matching route rule (``rules.py``) replaces the model's candidates and maybe strategy;
2. residency (``regions.py``): backends outside ``regions.allowed`` are dropped for good;
3. capabilities (``capabilities.py``): backends that cannot serve this kind of request are dropped;
4. context windows (``context.py``): backends the request does not fit are dropped; when none fits,
   the model's overflow policy rejects or truncates;
5. the strategy orders what is left (``strategies.py``, ``complexity.py``);
6. placement (``placement.py``), a stable sort of that order: backends the health tracker reports
   unavailable last (never dropped: when all are unavailable this changes nothing, and the tracker's
   ejection cap decides what "unavailable" means), a weighted split's arms before the backends
   outside it, and with ``preferLocal`` same-region backends first; so locality narrows the
   strategy's choice to the healthy local backends while there are any;
7. latency probes (``probes.py``): for the latency strategy, one unmeasured backend of the leading
   group may go first, at most once per probe interval per backend.

Refusals raise :class:`RoutingRefused` (an :class:`ApiError`) with a ``reason`` for metrics. Nothing
here does I/O or reads a clock (the probe slots read their own); randomness (the weighted split
without a user) comes from ``rng``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from llmroute_proto.v1 import config_pb2 as pb

from ..config.snapshot import BackendEntry, ModelEntry
from ..openai_api.errors import ApiError
from . import complexity as scoring
from . import context, placement, regions, rules, strategies
from .capabilities import Kind, needs, supports
from .decision import Decision, Excluded
from .probes import LatencyProbes, probe
from .tokens import Estimate, estimate_chat, estimate_embeddings

__all__ = ["Availability", "RequestHints", "RoutingRefused", "plan"]

# Backend -> may it take traffic now? Provided by the health tracker (circuit breakers, ejection).
Availability = Callable[[BackendEntry], bool]

_STRATEGY_NAMES = {
    pb.STRATEGY_FALLBACK: "fallback",
    pb.STRATEGY_WEIGHTED: "weighted",
    pb.STRATEGY_COST: "cost",
    pb.STRATEGY_LATENCY: "latency",
    pb.STRATEGY_COMPLEXITY: "complexity",
}


class RequestHints(Protocol):
    """The routing hints of a request (``service.Hints`` satisfies this)."""

    @property
    def task(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


class RoutingRefused(ApiError):
    """The request cannot be routed; ``reason`` is a bounded metric label."""

    def __init__(self, reason: str, error: ApiError) -> None:
        super().__init__(error.status, error.message, param=error.param, code=error.code)
        self.reason = reason


class _Scorer:
    """Scores the request as the app sent it (before any truncation), at most once, and only if a
    rule or the strategy asks."""

    __slots__ = ("body", "estimate", "result")

    def __init__(self, body: Mapping[str, Any], estimate: Estimate) -> None:
        self.body, self.estimate = body, estimate
        self.result: scoring.Complexity | None = None

    def get(self) -> scoring.Complexity:
        if self.result is None:
            self.result = scoring.score(self.body, self.estimate.input_tokens)
        return self.result

    def value(self) -> float:
        return self.get().score


def _route_name(entry: ModelEntry) -> str:
    return entry.facts.route_name


def _by_rule(matched: rules.RuleMatch | None) -> str:
    return f" (as chosen by rule {matched.label})" if matched is not None else ""


def _residency_error(
    entry: ModelEntry, excluded: list[BackendEntry], matched: rules.RuleMatch | None
) -> RoutingRefused:
    allowed = ", ".join(entry.route.regions.allowed)
    elsewhere = ", ".join(f"{b.name} ({b.region or 'no region'})" for b in excluded)
    return RoutingRefused(
        "residency",
        ApiError(
            503,
            f"route {_route_name(entry)} only allows regions [{allowed}] (regions.allowed, a residency "
            f"rule) and no candidate of model {entry.name!r}{_by_rule(matched)} is in them; nothing "
            f"was sent to the backends in other regions: {elsewhere}",
            code="no_backend_in_allowed_regions",
        ),
    )


def _capability_error(
    entry: ModelEntry, wanted: tuple[str, ...], residency: bool, matched: rules.RuleMatch | None
) -> RoutingRefused:
    where = (" in the allowed regions" if residency else "") + _by_rule(matched)
    if wanted == ("embeddings",):
        message = f"no backend of model {entry.name!r}{where} serves embeddings"
        code = "unsupported_model"
    else:
        message = f"no backend of model {entry.name!r}{where} supports {' and '.join(wanted)}"
        code = "unsupported_capability"
    return RoutingRefused("capability", ApiError(400, message, param="model", code=code))


def _order(
    strategy: int,
    candidates: list[BackendEntry],
    entry: ModelEntry,
    *,
    hints: RequestHints,
    estimate: Estimate,
    scorer: _Scorer | None,
    latency: strategies.LatencyEstimate | None,
    stream: bool,
    rng: random.Random | None,
) -> tuple[list[BackendEntry], int, str | None]:
    """Candidates in the strategy's order, how many of them lead (the weighted split's arms; all
    for the other strategies), and the tier the complexity strategy chose."""
    if strategy == pb.STRATEGY_WEIGHTED:
        split = {arm.backend: arm.weight for arm in entry.model.split}
        key = f"user:{hints.user}" if hints.user else f"tenant:{hints.tenant}" if hints.tenant else None
        ranked = strategies.by_weight(candidates, split, key, rng=rng)
        return ranked, strategies.arm_count(candidates, split), None
    if strategy == pb.STRATEGY_COST:
        return strategies.by_cost(candidates, estimate), len(candidates), None
    if strategy == pb.STRATEGY_LATENCY:
        return strategies.by_latency(candidates, latency, stream=stream), len(candidates), None
    if strategy == pb.STRATEGY_COMPLEXITY and scorer is not None:
        thresholds = entry.model.complexity if entry.model.HasField("complexity") else None
        tier = scoring.tier_for(scorer.value(), thresholds)
        return strategies.by_tier(candidates, tier), len(candidates), scoring.tier_name(tier)
    return candidates, len(candidates), None


_CHAT = ("chat",)
_EMBEDDINGS = ("embeddings",)


def _capable(
    candidates: list[BackendEntry], wanted: tuple[str, ...]
) -> tuple[list[BackendEntry], list[BackendEntry]]:
    """(those that support everything ``wanted``, the others), each in order."""
    capable: list[BackendEntry] = []
    incapable: list[BackendEntry] = []
    for backend in candidates:
        (capable if supports(backend, wanted) else incapable).append(backend)
    return capable, incapable


def plan(
    entry: ModelEntry,
    body: dict[str, Any],
    hints: RequestHints,
    *,
    kind: Kind = "chat",
    region: str = "",
    stream: bool = False,
    health: Availability | None = None,
    latency: strategies.LatencyEstimate | None = None,
    probes: LatencyProbes | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """Route one request of ``entry``'s model; raises :class:`RoutingRefused` when none can serve.

    ``region`` is the sidecar's own region; ``health`` and ``latency`` come from the health tracker
    (both optional: without them every backend counts as available and latency as unknown);
    ``probes``, the sidecar's probe slots, lets the latency strategy measure unmeasured backends
    (without it they only ever get fallbacks).
    """
    chat = kind == "chat"
    estimate = estimate_chat(body) if chat else estimate_embeddings(body)
    facts = entry.facts  # the route's protobuf fields, read once per snapshot
    # The complexity score is only ever computed for a rule or the complexity strategy that asks.
    scorer = (
        _Scorer(body, estimate)
        if chat and (facts.has_rules or facts.strategy == pb.STRATEGY_COMPLEXITY)
        else None
    )
    route = entry.route

    # 1. rules: embeddings requests only follow rules that name their model (a rule about chat
    # tasks must not send embeddings to a chat backend).
    matched: rules.RuleMatch | None = None
    if facts.has_rules:
        matched = rules.first_match(
            route.rules,
            model=entry.name,
            task=hints.task,
            tier=hints.tier,
            headers=hints.headers,
            complexity=scorer.value if scorer is not None else lambda: 0.0,
            named_only=not chat,
        )
    wanted = needs(body, kind, images=estimate.images)
    incapable: Sequence[BackendEntry]
    if matched is not None:
        by_name = entry.backends_by_name
        chosen = [by_name[name] for name in matched.rule.backends if name in by_name]
        strategy = matched.rule.strategy or facts.strategy
        # 2. residency, a hard filter.
        inside, outside = regions.allowed(chosen, route.regions)
        candidates, incapable = _capable(inside, wanted)
    else:
        strategy = facts.strategy
        # 2. residency, computed with the snapshot for the model's own backends.
        inside, outside = list(facts.in_region), list(facts.outside)
        # 3. capabilities: the plain chat and embeddings cases too.
        if wanted == _CHAT:
            candidates, incapable = list(facts.chat), facts.no_chat
        elif wanted == _EMBEDDINGS:
            candidates, incapable = list(facts.embeddings), facts.no_embeddings
        else:
            candidates, incapable = _capable(inside, wanted)
    strategy = strategy or pb.STRATEGY_FALLBACK
    excluded = [Excluded(b.name, "residency") for b in outside] if outside else []
    if not inside:
        raise _residency_error(entry, outside, matched)
    if incapable:
        excluded += [Excluded(b.name, "capability") for b in incapable]
    if not candidates:
        raise _capability_error(entry, wanted, bool(outside), matched)

    # 4. context windows.
    send: dict[str, Any] = body
    truncated = 0
    if chat:
        try:
            fitted = context.fit(candidates, body, estimate, model=entry.model)
        except ApiError as exc:
            reason = "min_context" if exc.status == 503 else "context"
            raise RoutingRefused(reason, exc) from None
        excluded += [Excluded(b.name, "min_context") for b in fitted.below_minimum]
        excluded += [Excluded(b.name, "context") for b in fitted.too_small]
        candidates, send, estimate, truncated = (
            fitted.candidates,
            fitted.body,
            fitted.estimate,
            fitted.dropped,
        )

    # 5. strategy.
    ordered, lead, tier = _order(
        strategy,
        candidates,
        entry,
        hints=hints,
        estimate=estimate,
        scorer=scorer,
        latency=latency,
        stream=stream,
        rng=rng,
    )

    # 6. placement: healthy first, split arms before the rest, local first with preferLocal.
    prefer_local = facts.prefer_local
    ordered, demoted = placement.place(
        ordered, lead=lead, region=region, prefer_local=prefer_local, available=health
    )

    # 7. latency probes, within the group that gets traffic first.
    probed: BackendEntry | None = None
    if strategy == pb.STRATEGY_LATENCY and probes is not None and latency is not None:
        group = placement.leading(ordered, region=region, prefer_local=prefer_local, available=health)
        ordered, probed = probe(ordered, group, latency, probes, stream=stream)

    return Decision(
        model=entry.name,
        candidates=tuple(ordered),
        body=send,
        strategy=_STRATEGY_NAMES.get(strategy, "fallback"),
        estimate=estimate,
        rule=matched.label if matched is not None else None,
        rule_index=matched.index if matched is not None else None,
        complexity=scorer.result if scorer is not None else None,
        tier=tier,
        region=region,
        region_choice=regions.region_choice(ordered[0], region),
        prefer_local=prefer_local,
        allowed_regions=facts.allowed_regions,
        excluded=tuple(excluded),
        demoted=demoted,
        probe=probed.name if probed is not None else None,
        truncated=truncated,
    )
