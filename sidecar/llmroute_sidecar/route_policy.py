"""A route's request-path policies (rate limits, PII, cache, audit, memory, abuse, experiment) in plain
values, built once per config.

``service.py`` reads these for every request, so they are built from the protobuf ``Route`` once per
config snapshot and cached by route identity (as ``attempts.Policy`` is for resilience).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmroute_proto.v1 import config_pb2 as pb

from .ratelimit import LimitSpec

__all__ = ["AbuseSpec", "ExperimentSpec", "MemorySpec", "RoutePolicies"]

_PII_TYPES = {
    pb.PII_TYPE_EMAIL: "email",
    pb.PII_TYPE_PHONE: "phone",
    pb.PII_TYPE_CREDIT_CARD: "credit_card",
    pb.PII_TYPE_SSN: "ssn",
    pb.PII_TYPE_IBAN: "iban",
    pb.PII_TYPE_IP: "ip",
}
_RATE_KEYS = {pb.RATE_LIMIT_KEY_USER: "user", pb.RATE_LIMIT_KEY_TENANT: "tenant"}


@dataclass(frozen=True)
class MemorySpec:
    """``spec.memory``: how long and how much history is kept, and how an overlong one is cut."""

    ttl_seconds: float = 86400.0
    max_tokens_per_tenant: int = 1_000_000
    summarize: bool = False  # else a sliding window
    summarizer: str = ""  # logical model writing the summaries


@dataclass(frozen=True)
class ExperimentSpec:
    """``spec.experiment``: the logical model whose split's arms tag usage records."""

    model: str
    arms: frozenset[str]

    def arm_of(self, model: str, strategy: str, first: str) -> str:
        """The arm a request of ``model`` was assigned (the split's first choice), or ""."""
        if model != self.model or strategy != "weighted" or first not in self.arms:
            return ""
        return first


@dataclass(frozen=True)
class AbuseSpec:
    """``spec.abuse``: what is watched, over which windows, and when it blocks."""

    by_tenant: bool = False
    window_seconds: float = 60.0
    baseline_seconds: float = 3600.0
    spike_factor: float = 5.0
    min_requests: int = 60
    min_tokens: int = 200_000
    min_cost_micro_usd: int = 5_000_000
    max_policy_blocks: int = 10
    block_seconds: float = 600.0


@dataclass(frozen=True)
class RoutePolicies:
    scope: str  # "namespace/route": partitions rate-limit buckets and cache entries
    rate_limits: tuple[LimitSpec, ...] = ()
    pii_types: frozenset[str] = frozenset()
    pii_block: bool = False
    pii_restore: bool = False
    exact_ttl: float = 0.0  # seconds; 0: no exact cache
    semantic_ttl: float = 0.0  # seconds; 0: no semantic cache
    semantic_threshold: float = 0.0
    semantic_backend: str = ""
    semantic_any_temperature: bool = False
    audit_text: bool = False
    memory: MemorySpec | None = None  # conversation memory; None: off
    abuse: AbuseSpec | None = None  # abuse protection; None: off
    experiment: ExperimentSpec | None = None  # the A/B experiment; None: none

    @property
    def caching(self) -> bool:
        return self.exact_ttl > 0 or self.semantic_ttl > 0

    @classmethod
    def from_route(cls, route: pb.Route) -> RoutePolicies:
        limits = tuple(
            LimitSpec(
                key=_RATE_KEYS.get(limit.key, "route"),
                requests_per_minute=limit.requests_per_minute,
                tokens_per_minute=limit.tokens_per_minute,
            )
            for limit in route.rate_limits
        )
        pii = route.privacy.pii if route.HasField("privacy") and route.privacy.HasField("pii") else None
        types = (
            frozenset(_PII_TYPES[t] for t in pii.types if t in _PII_TYPES) if pii is not None else frozenset()
        )
        cache = route.cache if route.HasField("cache") else None
        exact_ttl = semantic_ttl = threshold = 0.0
        semantic_backend, any_temperature = "", False
        if cache is not None and cache.HasField("exact"):
            exact_ttl = cache.exact.ttl.ToTimedelta().total_seconds() or 600.0
        if cache is not None and cache.HasField("semantic"):
            semantic = cache.semantic
            semantic_ttl = semantic.ttl.ToTimedelta().total_seconds() or 600.0
            threshold = semantic.threshold
            semantic_backend = semantic.embedding_backend
            any_temperature = semantic.allow_nondeterministic
        return cls(
            scope=f"{route.namespace}/{route.name}",
            rate_limits=limits,
            pii_types=types,
            pii_block=pii is not None and pii.action == pb.PII_ACTION_BLOCK,
            pii_restore=pii is not None and pii.restore and pii.action != pb.PII_ACTION_BLOCK,
            exact_ttl=exact_ttl,
            semantic_ttl=semantic_ttl,
            semantic_threshold=threshold,
            semantic_backend=semantic_backend,
            semantic_any_temperature=any_temperature,
            audit_text=route.HasField("audit") and route.audit.include_text,
            memory=_memory(route),
            abuse=_abuse(route),
            experiment=_experiment(route),
        )


def _abuse(route: pb.Route) -> AbuseSpec | None:
    if not route.HasField("abuse"):
        return None
    a = route.abuse
    window = a.window.ToTimedelta().total_seconds() or 60.0
    return AbuseSpec(
        by_tenant=a.by_tenant,
        window_seconds=window,
        baseline_seconds=max(a.baseline.ToTimedelta().total_seconds() or 3600.0, 2 * window),
        spike_factor=a.spike_factor or 5.0,
        min_requests=a.min_requests or 60,
        min_tokens=a.min_tokens or 200_000,
        min_cost_micro_usd=a.min_cost_micro_usd or 5_000_000,
        max_policy_blocks=a.max_policy_blocks or 10,
        block_seconds=a.block_for.ToTimedelta().total_seconds() or 600.0,
    )


def _memory(route: pb.Route) -> MemorySpec | None:
    if not route.HasField("memory"):
        return None
    memory = route.memory
    return MemorySpec(
        ttl_seconds=memory.ttl.ToTimedelta().total_seconds() or 86400.0,
        max_tokens_per_tenant=memory.max_tokens_per_tenant or 1_000_000,
        summarize=memory.overflow == pb.MEMORY_OVERFLOW_SUMMARIZE and bool(memory.summarizer),
        summarizer=memory.summarizer,
    )


def _experiment(route: pb.Route) -> ExperimentSpec | None:
    if not route.HasField("experiment"):
        return None
    model = next((m for m in route.models if m.name == route.experiment.model), None)
    if model is None or not model.split:
        return None
    return ExperimentSpec(model=model.name, arms=frozenset(arm.backend for arm in model.split))
