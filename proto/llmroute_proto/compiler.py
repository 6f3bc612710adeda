"""The compiler: resources in, one ``RouterConfig`` per workload out. Pure code.

Given the LLMRoutes, LLMBudgets and Secrets of one namespace, and a pod's labels and region, it
selects the routes whose ``workloadSelector`` matches, resolves credentials from Secrets, and emits a
deterministic ``RouterConfig``: the same inputs give the same bytes and the same ``version``, so a
no-op reconcile pushes nothing. Problems (a missing Secret, a model name two routes both claim) are
returned per route instead of raised, so one bad route never takes the others down. The operator calls
this for each connected sidecar; the sidecar's standalone mode calls it on a folder of YAML.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from .api.budget import LLMBudget, SoftLimitAction
from .api.common import parse_duration
from .api.loader import SecretData
from .api.route import (
    BATCH_API_PROVIDERS,
    DEFAULT_BATCH_DISCOUNT_PERCENT,
    Backend,
    LabelSelector,
    LLMRoute,
    LogicalModel,
    Resilience,
    RouteRule,
)
from .v1 import config_pb2 as pb

__all__ = ["CompileResult", "compile_config", "config_version", "selector_matches"]

_PROVIDERS = {
    "openai": pb.PROVIDER_OPENAI,
    "azure-openai": pb.PROVIDER_AZURE_OPENAI,
    "anthropic": pb.PROVIDER_ANTHROPIC,
    "google": pb.PROVIDER_GOOGLE,
    "bedrock": pb.PROVIDER_BEDROCK,
    "cohere": pb.PROVIDER_COHERE,
    "openai-compatible": pb.PROVIDER_OPENAI_COMPATIBLE,
}
_STRATEGIES = {
    "fallback": pb.STRATEGY_FALLBACK,
    "weighted": pb.STRATEGY_WEIGHTED,
    "cost": pb.STRATEGY_COST,
    "latency": pb.STRATEGY_LATENCY,
    "complexity": pb.STRATEGY_COMPLEXITY,
}
_TIERS = {"small": pb.TIER_SMALL, "medium": pb.TIER_MEDIUM, "large": pb.TIER_LARGE}
_FAILURE_MODES = {"closed": pb.BUDGET_FAILURE_MODE_CLOSED, "open": pb.BUDGET_FAILURE_MODE_OPEN}
_OVERFLOW = {
    "reject": pb.CONTEXT_OVERFLOW_POLICY_REJECT,
    "truncate-oldest": pb.CONTEXT_OVERFLOW_POLICY_TRUNCATE_OLDEST,
}
_PII_ACTIONS = {"redact": pb.PII_ACTION_REDACT, "block": pb.PII_ACTION_BLOCK}
_PII_TYPES = {
    "email": pb.PII_TYPE_EMAIL,
    "phone": pb.PII_TYPE_PHONE,
    "credit_card": pb.PII_TYPE_CREDIT_CARD,
    "ssn": pb.PII_TYPE_SSN,
    "iban": pb.PII_TYPE_IBAN,
    "ip": pb.PII_TYPE_IP,
}
_MEMORY_OVERFLOW = {
    "sliding-window": pb.MEMORY_OVERFLOW_SLIDING_WINDOW,
    "summarize": pb.MEMORY_OVERFLOW_SUMMARIZE,
}
_RATE_KEYS = {
    "user": pb.RATE_LIMIT_KEY_USER,
    "tenant": pb.RATE_LIMIT_KEY_TENANT,
    "route": pb.RATE_LIMIT_KEY_ROUTE,
}
_BUDGET_STATES = {
    "Normal": pb.BUDGET_STATE_NORMAL,
    "SoftLimited": pb.BUDGET_STATE_SOFT_LIMITED,
    "Exhausted": pb.BUDGET_STATE_EXHAUSTED,
}
AWS_KEYS = ("awsAccessKeyId", "awsSecretAccessKey")


@dataclass
class CompileResult:
    """The config, plus what kept a route (or part of one) out of it."""

    config: pb.RouterConfig
    # "namespace/route" -> human-readable problems; a route listed here was left out whole.
    problems: dict[str, list[str]] = field(default_factory=dict)
    # "namespace/route" of every route compiled into the config.
    included: list[str] = field(default_factory=list)


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; no selector selects every pod."""
    if selector is None:
        return True
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions or []:
        present, values = req.key in labels, set(req.values or [])
        ok = {
            "In": present and labels.get(req.key) in values,
            "NotIn": not present or labels.get(req.key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[req.operator]
        if not ok:
            return False
    return True


def config_version(config: pb.RouterConfig) -> str:
    """Content hash of ``config`` without its version and timestamp."""
    copy = pb.RouterConfig()
    copy.CopyFrom(config)
    copy.ClearField("version")
    copy.ClearField("generated_at")
    digest = hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
    return f"sha256:{digest[:16]}"


def compile_config(
    *,
    namespace: str,
    routes: Sequence[LLMRoute],
    secrets: Sequence[SecretData],
    budgets: Sequence[LLMBudget] = (),
    pod_labels: Mapping[str, str] | None = None,
    region: str = "",
    generated_at: datetime | None = None,
    include_spend: bool = True,
) -> CompileResult:
    """Compile the config one sidecar (in ``namespace``, with ``pod_labels``) runs from.

    ``pod_labels=None`` means "every route of the namespace" (a standalone sidecar).
    ``include_spend=False`` leaves ``Budget.spent_micro_usd`` out (0): an operator-fed sidecar spends
    leased allowance and never reads it, and keeping it out means a status write that only moves the
    spend compiles to the same config, so it is not pushed to every sidecar (the operator's case).
    """
    config = pb.RouterConfig(namespace=namespace, region=region)
    result = CompileResult(config=config)
    secret_data = {s.name: s.data for s in secrets if s.namespace == namespace}
    credentials: dict[str, pb.Credential] = {}
    claimed_models: dict[str, str] = {}
    ordered = sorted(
        (r for r in routes if _namespace_of(r.metadata) == namespace),
        key=lambda r: str(r.metadata.get("name")),
    )
    for route in ordered:
        key = f"{namespace}/{route.metadata.get('name')}"
        if pod_labels is not None and not selector_matches(route.spec.workload_selector, pod_labels):
            continue
        problems: list[str] = []
        route_credentials = _credentials(route, secret_data, problems)
        for model in route.spec.models:
            owner = claimed_models.get(model.name)
            if owner is not None:
                problems.append(f"logical model {model.name!r} is already served by route {owner}")
        if problems:
            result.problems[key] = problems
            continue
        for model in route.spec.models:
            claimed_models[model.name] = key
        credentials.update(route_credentials)
        config.routes.append(_route(route, namespace))
        result.included.append(key)
    config.credentials.extend(credentials[k] for k in sorted(credentials))
    served = {r.name for r in config.routes}
    for budget in sorted(budgets, key=lambda b: str(b.metadata.get("name"))):
        if _namespace_of(budget.metadata) == namespace:
            compiled = _budget(budget, served, include_spend=include_spend)
            if compiled is not None:
                config.budgets.append(compiled)
    config.version = config_version(config)
    if generated_at is not None:
        stamp = Timestamp()
        stamp.FromDatetime(generated_at)
        config.generated_at.CopyFrom(stamp)
    return result


def _namespace_of(metadata: Mapping[str, object]) -> str:
    return str(metadata.get("namespace") or "default")


def _credentials(
    route: LLMRoute, secrets: Mapping[str, Mapping[str, str]], problems: list[str]
) -> dict[str, pb.Credential]:
    found: dict[str, pb.Credential] = {}
    for backend in route.spec.backends:
        ref = backend.credentials_ref
        if ref is None:
            continue
        data = secrets.get(ref.name)
        if data is None:
            problems.append(f"backends[{backend.name}]: Secret {ref.name!r} not found")
            continue
        if backend.provider == "bedrock":
            missing = [k for k in AWS_KEYS if k not in data]
            if missing:
                problems.append(f"backends[{backend.name}]: Secret {ref.name!r} lacks {', '.join(missing)}")
                continue
            aws = pb.AwsCredentials(
                access_key_id=data["awsAccessKeyId"],
                secret_access_key=data["awsSecretAccessKey"],
                session_token=data.get("awsSessionToken", ""),
            )
            found[_credential_id(backend)] = pb.Credential(id=_credential_id(backend), aws=aws)
        elif ref.key not in data:
            problems.append(f"backends[{backend.name}]: Secret {ref.name!r} has no key {ref.key!r}")
        else:
            cid = _credential_id(backend)
            found[cid] = pb.Credential(id=cid, api_key=pb.ApiKey(key=data[ref.key]))
    return found


def _credential_id(backend: Backend) -> str:
    ref = backend.credentials_ref
    if ref is None:
        return ""
    return ref.name if backend.provider == "bedrock" else f"{ref.name}/{ref.key}"


def _duration(text: str) -> Duration:
    value = Duration()
    value.FromTimedelta(parse_duration(text))
    return value


def _route(route: LLMRoute, namespace: str) -> pb.Route:
    spec = route.spec
    generation = route.metadata.get("generation")
    out = pb.Route(
        name=str(route.metadata.get("name")),
        namespace=namespace,
        generation=generation if isinstance(generation, int) else 0,
        models=[_model(m) for m in spec.models],
        rules=[_rule(r) for r in spec.rules or []],
        backends=[_backend(b) for b in spec.backends],
        resilience=_resilience(spec.resilience or Resilience()),
    )
    if spec.regions is not None:
        out.regions.CopyFrom(
            pb.RegionPolicy(allowed=spec.regions.allowed or [], prefer_local=spec.regions.prefer_local)
        )
    else:
        out.regions.CopyFrom(pb.RegionPolicy(prefer_local=True))
    if spec.cache is not None:
        if spec.cache.exact is not None:
            out.cache.exact.ttl.CopyFrom(_duration(spec.cache.exact.ttl))
        if spec.cache.semantic is not None:
            semantic = spec.cache.semantic
            out.cache.semantic.CopyFrom(
                pb.SemanticCache(
                    threshold=semantic.threshold,
                    embedding_backend=semantic.embedding_backend,
                    ttl=_duration(semantic.ttl),
                    allow_nondeterministic=not semantic.deterministic_only,
                )
            )
    if spec.privacy is not None and spec.privacy.pii is not None:
        pii = spec.privacy.pii
        out.privacy.pii.CopyFrom(
            pb.PiiPolicy(
                action=_PII_ACTIONS[pii.action], types=[_PII_TYPES[t] for t in pii.types], restore=pii.restore
            )
        )
    if spec.audit is not None:
        out.audit.CopyFrom(pb.AuditPolicy(include_text=spec.audit.include_text))
    if spec.abuse is not None:
        abuse = spec.abuse
        out.abuse.CopyFrom(
            pb.AbusePolicy(
                by_tenant=abuse.key == "tenant",
                window=_duration(abuse.window),
                baseline=_duration(abuse.baseline),
                spike_factor=abuse.spike_factor,
                min_requests=abuse.min_requests,
                min_tokens=abuse.min_tokens,
                min_cost_micro_usd=round(abuse.min_cost_usd * 1e6),
                max_policy_blocks=abuse.max_policy_blocks,
                block_for=_duration(abuse.block_for),
            )
        )
    if spec.memory is not None:
        out.memory.CopyFrom(
            pb.MemoryPolicy(
                ttl=_duration(spec.memory.ttl),
                max_tokens_per_tenant=spec.memory.max_tokens_per_tenant,
                overflow=_MEMORY_OVERFLOW[spec.memory.overflow],
                summarizer=spec.memory.summarizer or "",
            )
        )
    if spec.experiment is not None:
        # Only the model matters to sidecars: they tag its records with the arm; the operator decides.
        out.experiment.CopyFrom(pb.ExperimentPolicy(model=spec.experiment.model))
    for limit in spec.rate_limits or []:
        out.rate_limits.append(
            pb.RateLimit(
                key=_RATE_KEYS[limit.key],
                requests_per_minute=limit.requests_per_minute or 0,
                tokens_per_minute=limit.tokens_per_minute or 0,
            )
        )
    return out


def _model(model: LogicalModel) -> pb.LogicalModel:
    out = pb.LogicalModel(
        name=model.name,
        strategy=_STRATEGIES[model.strategy],
        backends=model.backend_names(),
        split=[pb.WeightedBackend(backend=s.backend, weight=s.weight) for s in model.split or []],
        min_context_window=model.min_context_window or 0,
        context_overflow=_OVERFLOW[model.context_overflow],
    )
    if model.complexity is not None:
        thresholds = model.complexity.thresholds
        out.complexity.CopyFrom(pb.ComplexityThresholds(small=thresholds.small, medium=thresholds.medium))
    elif model.strategy == "complexity":
        out.complexity.CopyFrom(pb.ComplexityThresholds(small=0.3, medium=0.7))
    return out


def _rule(rule: RouteRule) -> pb.Rule:
    match = pb.RuleMatch(
        task=rule.match.task or "", tier=rule.match.tier or "", headers=rule.match.headers or {}
    )
    if rule.match.complexity_above is not None:
        match.complexity_above = rule.match.complexity_above
    return pb.Rule(
        match=match,
        backends=rule.backends,
        name=rule.name or "",
        model=rule.model or "",
        strategy=_STRATEGIES[rule.strategy] if rule.strategy else pb.STRATEGY_UNSPECIFIED,
    )


def _backend(backend: Backend) -> pb.Backend:
    caps = backend.capabilities
    out = pb.Backend(
        name=backend.name,
        provider=_PROVIDERS[backend.provider],
        model=backend.model,
        endpoint=backend.endpoint or "",
        region=backend.region,
        credential_id=_credential_id(backend),
        context_window=backend.context_window or 0,
        tier=_TIERS[backend.tier],
        max_concurrency=backend.max_concurrency or 0,
        capabilities=pb.Capabilities(
            chat=caps.chat,
            embeddings=caps.embeddings,
            tools=caps.tools,
            json_mode=caps.json_mode,
            vision=caps.vision,
        ),
    )
    if backend.pricing is not None:
        out.pricing.input_per_million = backend.pricing.input_per_million
        out.pricing.output_per_million = backend.pricing.output_per_million
        if backend.pricing.cached_input_per_million is not None:
            out.pricing.cached_input_per_million = backend.pricing.cached_input_per_million
    # Provider batch APIs: "auto" means the provider's own where the sidecar has a client for it.
    if backend.batch_api == "auto" and backend.provider in BATCH_API_PROVIDERS:
        out.batch_api = pb.BATCH_API_PROVIDER
        discount = backend.pricing.batch_discount_percent if backend.pricing is not None else None
        out.pricing.batch_discount_percent = DEFAULT_BATCH_DISCOUNT_PERCENT if discount is None else discount
    else:
        out.batch_api = pb.BATCH_API_OFF
    if backend.provider == "azure-openai":
        azure = backend.azure
        out.azure_openai.CopyFrom(
            pb.AzureOpenAIOptions(
                api_version=azure.api_version if azure else "2024-10-21",
                deployment=(azure.deployment if azure else None) or backend.model,
            )
        )
    elif backend.provider == "bedrock":
        out.bedrock.CopyFrom(pb.BedrockOptions(aws_region=backend.region))
    return out


def _resilience(resilience: Resilience) -> pb.Resilience:
    retries, breaker, timeout = resilience.retries, resilience.circuit_breaker, resilience.timeout
    return pb.Resilience(
        timeout=pb.Timeouts(per_attempt=_duration(timeout.per_attempt), total=_duration(timeout.total)),
        retries=pb.RetryPolicy(
            attempts=retries.attempts,
            backoff=pb.Backoff(base=_duration(retries.backoff.base), max=_duration(retries.backoff.max)),
            retry_on=list(retries.retry_on),
            budget_fraction=retries.budget_percent / 100,
        ),
        circuit_breaker=pb.CircuitBreaker(
            consecutive_failures=breaker.consecutive_failures,
            failure_rate=breaker.failure_rate,
            window=_duration(breaker.window),
            cooldown=_duration(breaker.cooldown),
            max_ejected_percent=breaker.max_ejected_percent,
            min_requests=breaker.min_requests,
        ),
        hedging=pb.Hedging(delay=_duration(hedging.delay), percentile=hedging.percentile or 0.0)
        if (hedging := resilience.hedging) is not None
        else None,
    )


def _budget(budget: LLMBudget, served_routes: set[str], *, include_spend: bool = True) -> pb.Budget | None:
    spec, status = budget.spec, budget.status
    scope = pb.BudgetScope(
        routes=spec.scope.routes or [],
        tenants=[spec.scope.tenant] if spec.scope.tenant else [],
        namespace=bool(spec.scope.namespace),
        users=[spec.scope.user] if spec.scope.user else [],
    )
    if spec.scope.routes and not served_routes.intersection(spec.scope.routes):
        return None  # none of its routes reach this sidecar
    state = _BUDGET_STATES[status.state] if status and status.state else pb.BUDGET_STATE_NORMAL
    hard = _micro(spec.limits.hard)
    spent = _micro(status.spent) if status is not None and status.spent is not None else 0
    out = pb.Budget(
        name=str(budget.metadata.get("name")),
        state=state,
        scope=scope,
        requires_allowance=True,
        failure_mode=_FAILURE_MODES[spec.failure_mode],
        hard_limit_micro_usd=hard,
        soft_limit_micro_usd=_micro(spec.limits.soft) if spec.limits.soft is not None else 0,
        spent_micro_usd=spent if include_spend else 0,
        period=spec.period.type,
        timezone=spec.period.timezone,
    )
    if spec.on_soft_limit is not None:
        # Always set: the sidecar applies it only while the budget is SoftLimited (its own count in
        # standalone mode, the operator's state otherwise).
        target = _downgrade_target(spec.on_soft_limit, spent, hard)
        if target in _TIERS:
            out.downgrade_tier = _TIERS[target]
        else:
            out.downgrade_backend = target
    if status is not None and status.period_start is not None:
        out.period_start.FromDatetime(status.period_start)
    if status is not None and status.reset_at is not None:
        out.period_end.FromDatetime(status.reset_at)
    return out


def _micro(amount: str) -> int:
    """A decimal USD string as integer micro-USD (exact: no float on the way)."""
    return int((Decimal(amount) * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))


def _downgrade_target(action: SoftLimitAction, spent: int, hard: int) -> str:
    """The downgrade in force: the last ladder step whose percent of the hard limit is reached."""
    target = action.downgrade_to
    percent = spent * 100 / hard if hard > 0 else 100.0
    for step in action.ladder or []:
        if percent >= step.at_percent:
            target = step.downgrade_to
    return target
