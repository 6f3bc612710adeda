"""Builders of small RouterConfigs for the routing tests: backends and one logical model, validated
through the real ``build_snapshot`` so the planner sees exactly what a running sidecar would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.config.snapshot import ModelEntry, build_snapshot
from llmroute_sidecar.service import Hints

TIERS = {"small": pb.TIER_SMALL, "medium": pb.TIER_MEDIUM, "large": pb.TIER_LARGE, "": pb.TIER_UNSPECIFIED}
STRATEGIES = {
    "fallback": pb.STRATEGY_FALLBACK,
    "weighted": pb.STRATEGY_WEIGHTED,
    "cost": pb.STRATEGY_COST,
    "latency": pb.STRATEGY_LATENCY,
    "complexity": pb.STRATEGY_COMPLEXITY,
    "": pb.STRATEGY_UNSPECIFIED,
}
OVERFLOW = {
    "reject": pb.CONTEXT_OVERFLOW_POLICY_REJECT,
    "truncate-oldest": pb.CONTEXT_OVERFLOW_POLICY_TRUNCATE_OLDEST,
}


def backend(
    name: str,
    *,
    region: str = "us-east-1",
    tier: str = "medium",
    prices: tuple[float, float] = (1.0, 2.0),
    window: int = 0,
    chat: bool = True,
    tools: bool = True,
    json_mode: bool = True,
    vision: bool = False,
    embeddings: bool = False,
) -> pb.Backend:
    return pb.Backend(
        name=name,
        provider=pb.PROVIDER_OPENAI_COMPATIBLE,
        model=f"model-{name}",
        endpoint=f"http://127.0.0.1:1/{name}",
        region=region,
        pricing=pb.Pricing(input_per_million=prices[0], output_per_million=prices[1]),
        context_window=window,
        tier=TIERS[tier],
        capabilities=pb.Capabilities(
            chat=chat, tools=tools, json_mode=json_mode, vision=vision, embeddings=embeddings
        ),
    )


def rule(
    backends: Sequence[str],
    *,
    name: str = "",
    model: str = "",
    strategy: str = "",
    task: str = "",
    tier: str = "",
    headers: Mapping[str, str] | None = None,
    complexity_above: float | None = None,
) -> pb.Rule:
    match = pb.RuleMatch(task=task, tier=tier, headers=dict(headers or {}))
    if complexity_above is not None:
        match.complexity_above = complexity_above
    return pb.Rule(
        match=match, backends=list(backends), name=name, model=model, strategy=STRATEGIES[strategy]
    )


def entry(
    backends: Sequence[pb.Backend],
    *,
    model: str = "chat",
    strategy: str = "fallback",
    names: Sequence[str] | None = None,
    split: Mapping[str, int] | None = None,
    rules: Sequence[pb.Rule] = (),
    allowed: Sequence[str] = (),
    prefer_local: bool = False,
    thresholds: tuple[float, float] | None = None,
    min_window: int = 0,
    overflow: str = "reject",
    extra_models: Sequence[pb.LogicalModel] = (),
) -> ModelEntry:
    logical = pb.LogicalModel(
        name=model,
        strategy=STRATEGIES[strategy],
        backends=list(names if names is not None else [b.name for b in backends]),
        split=[pb.WeightedBackend(backend=k, weight=v) for k, v in (split or {}).items()],
        min_context_window=min_window,
        context_overflow=OVERFLOW[overflow],
    )
    if thresholds is not None:
        logical.complexity.CopyFrom(pb.ComplexityThresholds(small=thresholds[0], medium=thresholds[1]))
    route = pb.Route(
        name="r",
        namespace="ns",
        models=[logical, *extra_models],
        rules=list(rules),
        backends=list(backends),
        regions=pb.RegionPolicy(allowed=list(allowed), prefer_local=prefer_local),
    )
    snapshot = build_snapshot(pb.RouterConfig(namespace="ns", routes=[route]))
    return snapshot.models[model]


def chat(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": text}], **extra}


def hints(headers: Mapping[str, str] | None = None, **fields: Any) -> Hints:
    return Hints(headers=headers if headers is not None else {}, **fields)
