"""The ``LLMRoute`` resource: which backends serve a workload's logical models, and how.

A route names *logical models* (what the app sends as ``model``), the *backends* that can serve them
(provider, model, region, price, credentials by Secret reference), the *rules* that override the
choice per request, and the resilience, cache, privacy and rate-limit policies the sidecar applies.
``budget.py`` holds the spending side; ``crdschema.py`` turns these models into
``crds/llmroute.io_llmroutes.yaml``. Every cross-field rule is written once in CEL (``cel.py``) and
mirrored by a Python validator here, so a standalone config fails the same way ``kubectl apply`` does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator
from pydantic.config import JsonDict

from .budget import CountedUsage
from .cel import rule, rules
from .common import Condition, DnsLabel, Duration, ResourceModel, parse_duration

__all__ = [
    "BATCH_API_PROVIDERS",
    "DEFAULT_BATCH_DISCOUNT_PERCENT",
    "ArmStatus",
    "ArmTotals",
    "Audit",
    "Backend",
    "Backoff",
    "Cache",
    "Capabilities",
    "CircuitBreaker",
    "Complexity",
    "ComplexityThresholds",
    "CredentialsRef",
    "ExactCache",
    "Experiment",
    "ExperimentStatus",
    "Hedging",
    "LLMRoute",
    "LLMRouteSpec",
    "LLMRouteStatus",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LogicalModel",
    "Pii",
    "Pricing",
    "Privacy",
    "RateLimit",
    "Regions",
    "Resilience",
    "Retries",
    "RouteMatch",
    "RouteRule",
    "SemanticCache",
    "SidecarCounts",
    "SplitEntry",
    "Timeout",
]

Provider = Literal["openai", "azure-openai", "anthropic", "google", "bedrock", "cohere", "openai-compatible"]
Strategy = Literal["fallback", "weighted", "cost", "latency", "complexity"]
Tier = Literal["small", "medium", "large"]
BatchApi = Literal["auto", "off"]
#: Providers whose own batch API the sidecar uses for batch lines (backends[].batchApi: auto).
BATCH_API_PROVIDERS = ("openai", "azure-openai", "anthropic")
#: Percent off that OpenAI, Azure OpenAI (Global Batch) and Anthropic publish for batch requests.
DEFAULT_BATCH_DISCOUNT_PERCENT = 50.0
RetryOn = Literal["429", "5xx", "connect", "timeout", "reset"]
PiiType = Literal["email", "phone", "credit_card", "ssn", "iban", "ip"]
Region = str


def _nested_default(schema: JsonDict, model: type[ResourceModel]) -> None:
    """Give a nested object its full default in the CRD, so `kubectl get -o yaml` shows the effective
    values. (An empty-object default would not do: CEL rules are checked against the default as
    written, before nested defaults apply.)"""
    schema["default"] = model().to_wire()


class LabelSelectorRequirement(ResourceModel):
    """A label selector requirement: a key, an operator and values."""

    key: str = Field(max_length=317, description="The label key that the selector applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values: In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] | None = Field(
        default=None,
        max_length=64,
        description="Values for In and NotIn; must be empty for Exists and DoesNotExist.",
    )


class LabelSelector(ResourceModel):
    """Selects pods by label, as a Deployment's selector does."""

    match_labels: dict[str, str] | None = Field(
        default=None,
        max_length=32,
        description="Labels a pod must carry, all of them, with these exact values.",
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None,
        max_length=16,
        description="Label requirements a pod must meet, all of them.",
    )


class SplitEntry(ResourceModel):
    """One arm of an A/B split."""

    backend: DnsLabel = Field(description="Name of a backend declared in spec.backends.")
    weight: int = Field(
        ge=0,
        le=100,
        description=(
            "Share of users sent to this backend, in percent; the weights of a split sum to 100. With "
            "regions.preferLocal, the shares apply among the healthy arms in the sidecar's region."
        ),
    )


class ComplexityThresholds(ResourceModel):
    """Score boundaries between tiers: below small is small, below medium is medium, else large."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "self.small < self.medium",
                "complexity.thresholds.small must be below complexity.thresholds.medium",
                field_path=".small",
            )
        )
    }

    small: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Prompts scoring below this (0..1) go to small-tier backends.",
    )
    medium: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Prompts scoring below this (0..1), and at or above small, go to medium-tier backends; the rest go to large.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ComplexityThresholds:
        if self.small >= self.medium:
            raise ValueError("complexity.thresholds.small must be below complexity.thresholds.medium")
        return self


class Complexity(ResourceModel):
    """How the complexity strategy maps a prompt's score (0..1) to a backend tier."""

    thresholds: ComplexityThresholds = Field(
        default_factory=ComplexityThresholds,
        json_schema_extra=lambda schema: _nested_default(schema, ComplexityThresholds),
        description="Score boundaries between the small, medium and large tiers.",
    )


class LogicalModel(ResourceModel):
    """A model name the app sends, and the backends that can answer it."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "has(self.backends) || has(self.split)",
                "models[].backends or models[].split must list at least one backend",
            ),
            rule(
                "!has(self.split) || self.split.map(s, s.weight).sum() == 100",
                "models[].split weights must sum to 100",
                field_path=".split",
            ),
            rule(
                "self.strategy != 'weighted' || has(self.split)",
                "models[].split is required when models[].strategy is weighted",
                field_path=".strategy",
            ),
        )
    }

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.:/]*[A-Za-z0-9])?$",
        description="The name the app sends as `model`, e.g. chat. Unique within the route.",
    )
    strategy: Strategy = Field(
        default="fallback",
        description=(
            "How candidates are ordered: fallback keeps the declared order; weighted follows split, "
            "sticky per user; cost puts the cheapest suitable backend first; latency the fastest by "
            "each sidecar's decaying estimate (time to first token for streams); a healthy backend "
            "with no measured request in the last 5 minutes (new, or passed over as slower) is probed: "
            "at most one request every 10s per backend and sidecar tries it first, so it is measured "
            "again; complexity scores the prompt and picks a backend of the matching tier."
        ),
    )
    backends: list[DnsLabel] | None = Field(
        default=None,
        max_length=16,
        description="Candidate backends, by name from spec.backends; for fallback, the order is the preference.",
    )
    split: list[SplitEntry] | None = Field(
        default=None,
        max_length=16,
        description="A/B split for the weighted strategy; users stick to one arm by consistent hashing.",
    )
    complexity: Complexity | None = Field(
        default=None,
        description="Tier thresholds for the complexity strategy.",
    )
    min_context_window: int | None = Field(
        default=None,
        ge=1,
        description="Smallest context window (tokens) a backend must offer to serve this model.",
    )
    context_overflow: Literal["reject", "truncate-oldest"] = Field(
        default="reject",
        description=(
            "What happens when a request fits no candidate's context window: reject with a 400, or "
            "truncate-oldest, which keeps the system prompt and newest turns and reports the cut in a header."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> LogicalModel:
        if not self.backends and not self.split:
            raise ValueError(f"models[{self.name}]: backends or split must list at least one backend")
        if self.split is not None and sum(s.weight for s in self.split) != 100:
            raise ValueError(f"models[{self.name}].split: weights must sum to 100")
        if self.strategy == "weighted" and self.split is None:
            raise ValueError(f"models[{self.name}].split is required when strategy is weighted")
        return self

    def backend_names(self) -> list[str]:
        """Every backend this model may use, declared order first, then split-only arms."""
        names = list(self.backends or [])
        names += [s.backend for s in self.split or [] if s.backend not in names]
        return names


class RouteMatch(ResourceModel):
    """Request properties a rule matches; all given criteria must hold."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "has(self.task) || has(self.tier) || has(self.headers) || has(self.complexityAbove)",
                "rules[].match must set at least one of task, tier, headers or complexityAbove",
            )
        )
    }

    task: str | None = Field(
        default=None,
        max_length=63,
        description="Matches the x-llmroute-task request header, e.g. code_generation.",
    )
    tier: str | None = Field(
        default=None,
        max_length=63,
        description="Matches the x-llmroute-tier request header, e.g. premium.",
    )
    headers: dict[str, str] | None = Field(
        default=None,
        max_length=16,
        description="Request headers that must be present with these exact values (names are case-insensitive).",
    )
    complexity_above: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Matches when the prompt's complexity score (0..1) is above this value.",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> RouteMatch:
        if self.task is None and self.tier is None and not self.headers and self.complexity_above is None:
            raise ValueError("rules[].match must set at least one of task, tier, headers or complexityAbove")
        return self


class RouteRule(ResourceModel):
    """A per-request override: the first rule whose match holds picks the candidates."""

    name: str | None = Field(
        default=None,
        max_length=63,
        description="A name for the rule, shown in decision traces and metrics.",
    )
    model: str | None = Field(
        default=None,
        max_length=128,
        description="Restricts the rule to this logical model from spec.models; omit to apply to all.",
    )
    match: RouteMatch = Field(description="What the request must look like for this rule to apply.")
    backends: list[DnsLabel] = Field(
        min_length=1,
        max_length=16,
        description="Candidates used instead of the model's, in preference order; names from spec.backends.",
    )
    strategy: Strategy | None = Field(
        default=None,
        description="Ordering for these candidates; defaults to the model's strategy.",
    )


class CredentialsRef(ResourceModel):
    """A key in a Secret of the route's namespace. Keys are never written inline."""

    name: DnsLabel = Field(description="Name of the Secret, in the route's namespace.")
    key: str = Field(
        default="apiKey",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description=(
            "Key within the Secret holding the API key. For bedrock, the Secret holds "
            "awsAccessKeyId and awsSecretAccessKey (and optionally awsSessionToken) and this is ignored."
        ),
    )


class Pricing(ResourceModel):
    """List price of the backend, used for cost routing, budgets and x-llmroute-cost-usd."""

    input_per_million: float = Field(ge=0, description="USD per million input (prompt) tokens.")
    output_per_million: float = Field(ge=0, description="USD per million output (completion) tokens.")
    cached_input_per_million: float | None = Field(
        default=None,
        ge=0,
        description="USD per million cached input tokens, where the provider discounts them.",
    )
    batch_discount_percent: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description=(
            "Percent off every token price for batch lines the provider's own batch API runs "
            "(batchApi: auto on openai, azure-openai or anthropic); defaults to 50, what those providers "
            "publish. Budgets and usage records count those lines at the discounted price."
        ),
    )


class Capabilities(ResourceModel):
    """What the backend's model can do; the router skips backends that cannot serve a request."""

    chat: bool = Field(default=True, description="Serves chat completions.")
    embeddings: bool = Field(default=False, description="Serves embeddings.")
    tools: bool = Field(default=True, description="Supports tool (function) calling.")
    json_mode: bool = Field(default=True, description="Supports JSON mode and JSON-schema response formats.")
    vision: bool = Field(default=False, description="Accepts image parts in messages.")


class AzureOptions(ResourceModel):
    """Azure OpenAI specifics."""

    deployment: str | None = Field(
        default=None,
        max_length=64,
        description="The deployment name; defaults to the backend's model.",
    )
    api_version: str = Field(
        default="2024-10-21",
        max_length=32,
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$",
        description="The api-version query parameter sent with every request.",
    )


class Backend(ResourceModel):
    """A concrete model at a provider, in a region, with its price and credentials."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "self.provider == 'openai-compatible' || has(self.credentialsRef)",
                "backends[].credentialsRef is required for this provider",
                field_path=".credentialsRef",
            ),
            rule(
                "!(self.provider in ['azure-openai', 'openai-compatible']) || has(self.endpoint)",
                "backends[].endpoint is required for azure-openai and openai-compatible",
                field_path=".endpoint",
            ),
            rule(
                "!has(self.pricing) || !has(self.pricing.batchDiscountPercent) || "
                "self.provider in ['openai', 'azure-openai', 'anthropic']",
                "backends[].pricing.batchDiscountPercent applies only to openai, azure-openai and anthropic, "
                "whose batch APIs the sidecar uses",
                field_path=".pricing.batchDiscountPercent",
            ),
        )
    }

    name: DnsLabel = Field(description="Name of the backend, unique within the route, e.g. gpt4o-us.")
    provider: Provider = Field(
        description=(
            "Wire protocol and auth of the upstream: openai, azure-openai, anthropic, google (Gemini), "
            "bedrock (Converse), cohere (v2) or openai-compatible (vLLM, TGI, Ollama)."
        )
    )
    model: str = Field(
        min_length=1,
        max_length=256,
        description="The provider's model id, e.g. gpt-4o, claude-sonnet-4-5 or anthropic.claude-3-haiku-20240307-v1:0.",
    )
    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description=(
            "Base URL as the provider's official SDK takes it, e.g. https://api.openai.com/v1; "
            "defaults to the provider's public endpoint. Required for azure-openai and openai-compatible."
        ),
    )
    region: Region = Field(
        default="global",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Where the backend serves from, e.g. us-east-1 or eu-west-1; used for residency and locality.",
    )
    credentials_ref: CredentialsRef | None = Field(
        default=None,
        description="The Secret key holding the provider credentials; required except for openai-compatible.",
    )
    pricing: Pricing | None = Field(
        default=None,
        description="Price per million tokens; backends without a price count as free.",
    )
    context_window: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="Largest prompt plus completion the model accepts, in tokens.",
    )
    tier: Tier = Field(
        default="medium",
        description="Size class used by the complexity strategy and budget downgrades: small, medium or large.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Most requests in flight to this backend per sidecar; more wait in a bounded queue.",
    )
    capabilities: Capabilities = Field(
        default_factory=Capabilities,
        json_schema_extra=lambda schema: _nested_default(schema, Capabilities),
        description="What the model supports; requests needing more skip this backend.",
    )
    azure: AzureOptions | None = Field(
        default=None, description="Azure OpenAI options (deployment, api-version)."
    )
    batch_api: BatchApi = Field(
        default="auto",
        description=(
            "How batch lines (the sidecar's OpenAI Files and Batches API) routed to this backend reach the "
            "provider. auto: through the provider's own batch API where the sidecar has one (OpenAI and "
            "Azure OpenAI Batch, Anthropic Message Batches), at pricing.batchDiscountPercent off; the "
            "sidecar submits the lines, polls and writes the answers into the batch's output file. Other "
            "providers (Bedrock and Vertex batch need S3 or GCS) run the lines live. off: always live calls "
            "at the batch tier, at the list price (e.g. for a deployment without batch quota)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Backend:
        if self.provider != "openai-compatible" and self.credentials_ref is None:
            raise ValueError(f"backends[{self.name}].credentialsRef is required for provider {self.provider}")
        if self.provider in ("azure-openai", "openai-compatible") and self.endpoint is None:
            raise ValueError(f"backends[{self.name}].endpoint is required for provider {self.provider}")
        if (
            self.pricing is not None
            and self.pricing.batch_discount_percent is not None
            and self.provider not in BATCH_API_PROVIDERS
        ):
            raise ValueError(
                f"backends[{self.name}].pricing.batchDiscountPercent applies only to openai, azure-openai "
                f"and anthropic, whose batch APIs the sidecar uses (not {self.provider})"
            )
        return self


class Regions(ResourceModel):
    """Data residency and locality."""

    allowed: list[Region] | None = Field(
        default=None,
        max_length=32,
        description=(
            "If set, a hard residency rule: requests only ever go to backends in these regions, "
            "even when all of them are down."
        ),
    )
    prefer_local: bool = Field(
        default=True,
        description=(
            "Try healthy backends in the sidecar's own region before others: while a local candidate "
            "is healthy, the strategy chooses among the local ones only (a weighted split shares "
            "traffic among its local arms, weights renormalised), and remote ones are fallbacks; when "
            "none is, the remote ones get the traffic, a split by its weights. Backends outside a "
            "weighted split stay fallbacks after all of its arms, local or not."
        ),
    )


class Timeout(ResourceModel):
    """Time limits for one request."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "duration(self.perAttempt) <= duration(self.total)",
                "resilience.timeout.perAttempt must not exceed resilience.timeout.total",
                field_path=".perAttempt",
            )
        )
    }

    per_attempt: Duration = Field(default="30s", description="Limit for one upstream attempt, e.g. 30s.")
    total: Duration = Field(
        default="60s", description="Limit for the whole request, retries and fallbacks included."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Timeout:
        if parse_duration(self.per_attempt) > parse_duration(self.total):
            raise ValueError("resilience.timeout.perAttempt must not exceed resilience.timeout.total")
        return self


class Backoff(ResourceModel):
    """Exponential backoff with full jitter between retries."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "duration(self.base) <= duration(self.max)",
                "resilience.retries.backoff.base must not exceed resilience.retries.backoff.max",
                field_path=".base",
            )
        )
    }

    base: Duration = Field(default="200ms", description="First backoff interval, doubled on each retry.")
    max: Duration = Field(default="5s", description="Longest backoff interval.")

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if parse_duration(self.base) > parse_duration(self.max):
            raise ValueError("resilience.retries.backoff.base must not exceed resilience.retries.backoff.max")
        return self


class Retries(ResourceModel):
    """Retries on the same backend before falling back to the next."""

    attempts: int = Field(default=2, ge=0, le=10, description="Retries after the first attempt, per backend.")
    backoff: Backoff = Field(
        default_factory=Backoff,
        json_schema_extra=lambda schema: _nested_default(schema, Backoff),
        description="Wait between retries; Retry-After is honoured.",
    )
    retry_on: list[RetryOn] = Field(
        default=["429", "5xx", "connect", "timeout"],
        max_length=5,
        description="Failures worth retrying: 429, 5xx, connect, timeout, reset. Auth errors and 400s never are.",
    )
    budget_percent: int = Field(
        default=20,
        ge=0,
        le=100,
        description="Retries may add at most this percentage of load on top of first attempts (a retry budget).",
    )


class CircuitBreaker(ResourceModel):
    """Per-backend health: eject a failing backend for a while, then probe it."""

    consecutive_failures: int = Field(
        default=5, ge=1, le=1000, description="Failures in a row that open the breaker."
    )
    failure_rate: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Failure ratio (0..1) over the window that opens the breaker.",
    )
    min_requests: int = Field(
        default=10,
        ge=1,
        description="Requests needed in the window before failureRate is judged.",
    )
    window: Duration = Field(default="30s", description="Sliding window for failureRate.")
    cooldown: Duration = Field(
        default="30s", description="How long an open breaker waits before a half-open probe."
    )
    max_ejected_percent: int = Field(
        default=50,
        ge=0,
        le=100,
        description="At most this share of a model's backends is ejected at once, so one bad minute never ejects them all.",
    )


class Hedging(ResourceModel):
    """Hedged requests: when the first backend has not answered after a delay, the same request goes
    to the next candidate too; the first answer wins and the other call is cancelled. Both calls are
    billed: the cancelled one at its prompt's estimated input tokens."""

    delay: Duration = Field(
        default="1s",
        description=(
            "How long the first attempt runs alone before the hedge is sent, e.g. 800ms; with "
            "percentile, the delay used until the backend has 20 measured requests."
        ),
    )
    percentile: float | None = Field(
        default=None,
        ge=50,
        le=99.9,
        description=(
            "Send the hedge after this percentile of the first backend's recent latency (time to first "
            "token for streams) instead of a fixed delay, e.g. 95."
        ),
    )


class Resilience(ResourceModel):
    """Timeouts, retries and circuit breaking."""

    timeout: Timeout = Field(
        default_factory=Timeout,
        json_schema_extra=lambda schema: _nested_default(schema, Timeout),
        description="Per-attempt and total time limits.",
    )
    retries: Retries = Field(
        default_factory=Retries,
        json_schema_extra=lambda schema: _nested_default(schema, Retries),
        description="Retry policy on one backend.",
    )
    circuit_breaker: CircuitBreaker = Field(
        default_factory=CircuitBreaker,
        json_schema_extra=lambda schema: _nested_default(schema, CircuitBreaker),
        description="Ejection of failing backends.",
    )
    hedging: Hedging | None = Field(
        default=None,
        description="Hedged requests to the next candidate after a delay (chat only); unset: off.",
    )


class ExactCache(ResourceModel):
    """Cache of identical requests."""

    ttl: Duration = Field(default="10m", description="How long an answer is reused.")


class SemanticCache(ResourceModel):
    """Cache of similar requests, by embedding similarity."""

    threshold: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Cosine similarity (0..1) above which a cached answer is reused.",
    )
    embedding_backend: DnsLabel = Field(
        description="Backend from spec.backends that computes the embeddings."
    )
    ttl: Duration = Field(default="10m", description="How long an answer is reused.")
    deterministic_only: bool = Field(
        default=True,
        description=(
            "true: only requests without tools and with temperature 0 use the semantic cache, since a "
            "similar prompt may only share an answer when sampling does not vary it; false: every request "
            "without tools is eligible."
        ),
    )


class Cache(ResourceModel):
    """Response caching; x-llmroute-no-cache skips it per request."""

    exact: ExactCache | None = Field(default=None, description="Exact-match cache.")
    semantic: SemanticCache | None = Field(default=None, description="Semantic (similarity) cache.")


class Pii(ResourceModel):
    """Detection of personal data in prompts."""

    action: Literal["redact", "block"] = Field(
        default="redact",
        description="redact replaces matches with placeholders before sending; block refuses the request with a 400.",
    )
    types: list[PiiType] = Field(
        default=["email", "phone", "credit_card", "ssn", "iban", "ip"],
        max_length=6,
        description="Kinds of personal data to detect: email, phone, credit_card, ssn, iban, ip.",
    )
    restore: bool = Field(
        default=False,
        description=(
            "With action redact: put the original values back where the answer repeats a placeholder, "
            "also across streamed chunks, so the app sees its own data while the provider never does."
        ),
    )


class Privacy(ResourceModel):
    """Privacy controls applied before a prompt leaves the pod."""

    pii: Pii | None = Field(default=None, description="Detection of personal data.")


class Audit(ResourceModel):
    """The sidecar's audit log: one JSON line per request on its standard output."""

    include_text: bool = Field(
        default=False,
        description=(
            "true: the audit line also carries the prompt and the completion text (after PII redaction). "
            "Off by default: the log then holds who called what, at what cost, never what was said."
        ),
    )


class Memory(ResourceModel):
    """Conversation memory: a request with the x-llmroute-conversation header sends only its new turn,
    and the sidecar adds the conversation so far, kept in the shared Redis (the sidecar's --redis-url;
    without it such requests are refused). History belongs to the tenant (x-llmroute-tenant) and is
    erased with DELETE /v1/conversations/{id}."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "self.overflow != 'summarize' || has(self.summarizer)",
                "memory.summarizer is required when memory.overflow is summarize",
            )
        )
    }

    ttl: Duration = Field(
        default="24h", description="How long a conversation is kept after its last turn, e.g. 24h."
    )
    max_tokens_per_tenant: int = Field(
        default=1_000_000,
        ge=1000,
        le=1_000_000_000,
        description=(
            "Bound on the history stored per tenant, in estimated tokens; beyond it the tenant's least "
            "recently used conversations are erased (llmroute_memory_evictions_total counts them)."
        ),
    )
    overflow: Literal["sliding-window", "summarize"] = Field(
        default="sliding-window",
        description=(
            "When the history no longer fits the largest context window among the model's candidates: "
            "sliding-window sends the newest turns that fit; summarize replaces the oldest turns by a "
            "summary written by the summarizer model, and keeps it. Either way the answer's "
            "x-llmroute-memory header says how many turns were left out or summarized; nothing is dropped silently."
        ),
    )
    summarizer: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Logical model of this route (spec.models[].name) that writes summaries, e.g. a small, cheap one.",
    )

    @model_validator(mode="after")
    def _summarizer(self) -> Memory:
        if self.overflow == "summarize" and self.summarizer is None:
            raise ValueError("memory.summarizer is required when memory.overflow is summarize")
        return self


class Abuse(ResourceModel):
    """Abuse protection: a user (or tenant) whose traffic spikes against its own baseline, or who
    keeps hitting policy blocks, is blocked for a while with a 403. With a shared Redis (the sidecar's
    --redis-url) counts and blocks hold across every replica of the workload; otherwise per sidecar."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "duration(self.window) < duration(self.baseline)",
                "abuse.window must be shorter than abuse.baseline",
            )
        )
    }

    key: Literal["user", "tenant"] = Field(
        default="user", description="Who is watched: user (x-llmroute-user) or tenant (x-llmroute-tenant)."
    )
    window: Duration = Field(default="1m", description="The short window rates are counted over, e.g. 1m.")
    baseline: Duration = Field(
        default="1h",
        description="The period of the key's own baseline: its average per window over the previous period.",
    )
    spike_factor: float = Field(
        default=5.0,
        ge=1.5,
        le=1000,
        description="Block when a window's requests, tokens or cost exceed this multiple of the baseline.",
    )
    min_requests: int = Field(
        default=60,
        ge=1,
        description="Requests per window below which nobody is blocked for requests (a new key has no baseline).",
    )
    min_tokens: int = Field(
        default=200_000, ge=1, description="Tokens per window below which nobody is blocked for tokens."
    )
    min_cost_usd: float = Field(
        default=5.0, ge=0.01, description="Spend per window (USD) below which nobody is blocked for cost."
    )
    max_policy_blocks: int = Field(
        default=10,
        ge=1,
        description="Refusals by PII, rate-limit or budget policy in one window that block the key.",
    )
    block_for: Duration = Field(default="10m", description="How long a block lasts; it lifts by itself.")

    @model_validator(mode="after")
    def _periods(self) -> Abuse:
        if parse_duration(self.window) >= parse_duration(self.baseline):
            raise ValueError("abuse.window must be shorter than abuse.baseline")
        return self


class Experiment(ResourceModel):
    """An A/B experiment on one logical model's weighted split: every arm's requests, errors, latency,
    time to first token, cost and quality (POST /v1/feedback) are counted by the operator into
    status.experiment, with confidence intervals, and a winner once the difference is significant."""

    model: str = Field(
        min_length=1,
        max_length=128,
        description="Logical model (spec.models[].name) whose split is the experiment; it must declare a split.",
    )
    metric: Literal["quality", "errorRate", "latency", "cost"] = Field(
        default="quality",
        description=(
            "What decides the winner: quality (the mean feedback score, higher is better), errorRate, "
            "latency (mean seconds to the last byte) or cost (mean USD per request); lower is better for "
            "the last three."
        ),
    )
    min_samples: int = Field(
        default=100,
        ge=2,
        le=10_000_000,
        description=(
            "Samples of the metric every arm needs before a winner may be called (feedback scores for "
            "quality, requests otherwise)."
        ),
    )
    confidence: float = Field(
        default=0.95,
        ge=0.5,
        le=0.9999,
        description=(
            "Confidence of the intervals and of the winner: the best arm must beat every other arm with "
            "a two-sided Welch test at this level (Bonferroni-corrected for more than two arms)."
        ),
    )


class RateLimit(ResourceModel):
    """A per-key request and token rate limit; with a shared Redis (--redis-url) it holds across every
    replica of the workload together, otherwise per sidecar."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "has(self.requestsPerMinute) || has(self.tokensPerMinute)",
                "rateLimits[] must set requestsPerMinute or tokensPerMinute",
            )
        )
    }

    key: Literal["user", "tenant", "route"] = Field(
        description="What is counted: user (x-llmroute-user), tenant (x-llmroute-tenant) or the whole route."
    )
    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Requests allowed per minute per key."
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Tokens allowed per minute per key."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> RateLimit:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("rateLimits[] must set requestsPerMinute or tokensPerMinute")
        return self


class LLMRouteSpec(ResourceModel):
    """Desired routing for the LLM calls of the selected workloads."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "self.backends.all(b, self.backends.exists_one(c, c.name == b.name))",
                "spec.backends[].name must be unique",
                field_path=".backends",
            ),
            rule(
                "self.models.all(m, self.models.exists_one(c, c.name == m.name))",
                "spec.models[].name must be unique",
                field_path=".models",
            ),
            rule(
                "self.models.all(m, !has(m.backends) || m.backends.all(n, self.backends.exists(b, b.name == n)))",
                "spec.models[].backends may only name backends declared in spec.backends",
                field_path=".models",
            ),
            rule(
                "self.models.all(m, !has(m.split) || m.split.all(s, self.backends.exists(b, b.name == s.backend)))",
                "spec.models[].split[].backend may only name backends declared in spec.backends",
                field_path=".models",
            ),
            rule(
                "!has(self.rules) || self.rules.all(r, r.backends.all(n, self.backends.exists(b, b.name == n)))",
                "spec.rules[].backends may only name backends declared in spec.backends",
                field_path=".rules",
            ),
            rule(
                "!has(self.rules) || self.rules.all(r, !has(r.model) || self.models.exists(m, m.name == r.model))",
                "spec.rules[].model may only name a model declared in spec.models",
                field_path=".rules",
            ),
            rule(
                "!has(self.cache) || !has(self.cache.semantic) || "
                "self.backends.exists(b, b.name == self.cache.semantic.embeddingBackend)",
                "spec.cache.semantic.embeddingBackend must name a backend declared in spec.backends",
                field_path=".cache",
            ),
            rule(
                "!has(self.memory) || !has(self.memory.summarizer) || "
                "self.models.exists(m, m.name == self.memory.summarizer)",
                "spec.memory.summarizer must name a model declared in spec.models",
                field_path=".memory",
            ),
            rule(
                "!has(self.experiment) || "
                "self.models.exists(m, m.name == self.experiment.model && has(m.split))",
                "spec.experiment.model must name a model of spec.models that declares a split",
                field_path=".experiment",
            ),
        )
    }

    workload_selector: LabelSelector | None = Field(
        default=None,
        description="Pods whose sidecars receive this route; omit to select every injected pod in the namespace.",
    )
    models: list[LogicalModel] = Field(
        min_length=1,
        max_length=32,
        description="Logical models the app may request, each with its candidate backends and strategy.",
    )
    rules: list[RouteRule] | None = Field(
        default=None,
        max_length=64,
        description="Per-request overrides; the first rule that matches wins.",
    )
    backends: list[Backend] = Field(
        min_length=1,
        max_length=32,
        description="Concrete provider models this route may call.",
    )
    regions: Regions | None = Field(default=None, description="Data residency and locality preferences.")
    resilience: Resilience | None = Field(
        default=None,
        description="Timeouts, retries with backoff, and circuit breaking; defaults apply when omitted.",
    )
    cache: Cache | None = Field(default=None, description="Response caching.")
    privacy: Privacy | None = Field(default=None, description="PII detection and redaction.")
    rate_limits: list[RateLimit] | None = Field(
        default=None,
        max_length=8,
        description="Request and token rate limits per user, tenant or route.",
    )
    audit: Audit | None = Field(default=None, description="What the per-request audit log records.")
    abuse: Abuse | None = Field(
        default=None,
        description="Automatic blocking of users or tenants whose traffic spikes or keeps hitting policy blocks.",
    )
    memory: Memory | None = Field(
        default=None,
        description="Conversation memory for requests with x-llmroute-conversation; unset: off (the header is ignored).",
    )
    experiment: Experiment | None = Field(
        default=None,
        description="Declares a model's weighted split an A/B experiment, reported in status.experiment.",
    )

    @model_validator(mode="after")
    def _references(self) -> LLMRouteSpec:
        declared = [b.name for b in self.backends]
        duplicates = sorted({n for n in declared if declared.count(n) > 1})
        if duplicates:
            raise ValueError(f"spec.backends[].name must be unique: {', '.join(duplicates)} repeated")
        models = [m.name for m in self.models]
        duplicate_models = sorted({n for n in models if models.count(n) > 1})
        if duplicate_models:
            raise ValueError(f"spec.models[].name must be unique: {', '.join(duplicate_models)} repeated")
        known = set(declared)
        for m in self.models:
            for name in m.backend_names():
                if name not in known:
                    raise ValueError(
                        f"spec.models[{m.name}] names backend {name!r}, which is not declared in spec.backends"
                    )
        for index, r in enumerate(self.rules or []):
            for name in r.backends:
                if name not in known:
                    raise ValueError(
                        f"spec.rules[{index}].backends names {name!r}, which is not declared in spec.backends"
                    )
            if r.model is not None and r.model not in models:
                raise ValueError(f"spec.rules[{index}].model {r.model!r} is not declared in spec.models")
        if self.cache and self.cache.semantic and self.cache.semantic.embedding_backend not in known:
            raise ValueError(
                "spec.cache.semantic.embeddingBackend must name a backend declared in spec.backends"
            )
        if self.memory and self.memory.summarizer is not None and self.memory.summarizer not in models:
            raise ValueError("spec.memory.summarizer must name a model declared in spec.models")
        if self.experiment is not None and not any(
            m.name == self.experiment.model and m.split is not None for m in self.models
        ):
            raise ValueError("spec.experiment.model must name a model of spec.models that declares a split")
        return self


class SidecarCounts(ResourceModel):
    """How many sidecars this route applies to, and how many run its latest config."""

    matched: int = Field(default=0, ge=0, description="Connected sidecars whose pods this route selects.")
    synced: int = Field(
        default=0, ge=0, description="Of those, sidecars that ACKed the latest config version."
    )
    rejected: int = Field(
        default=0, ge=0, description="Of those, sidecars that NACKed the latest config version."
    )
    summary: str = Field(default="0/0", max_length=32, description="synced/matched as text, for kubectl get.")


class ArmTotals(ResourceModel):
    """An arm's raw counts, from which the operator continues after a restart. Each moment triple is
    [count, sum, sum of squares]; each histogram counts observations per bucket of ``bucketsMs``."""

    latency: list[float] = Field(
        default_factory=lambda: [0.0, 0.0, 0.0],
        min_length=3,
        max_length=3,
        description="Seconds to the last byte of answered requests: [count, sum, sum of squares].",
    )
    ttft: list[float] = Field(
        default_factory=lambda: [0.0, 0.0, 0.0],
        min_length=3,
        max_length=3,
        description="Seconds to the first chunk of answered streams: [count, sum, sum of squares].",
    )
    cost: list[float] = Field(
        default_factory=lambda: [0.0, 0.0, 0.0],
        min_length=3,
        max_length=3,
        description="USD per request: [count, sum, sum of squares].",
    )
    quality: list[float] = Field(
        default_factory=lambda: [0.0, 0.0, 0.0],
        min_length=3,
        max_length=3,
        description="Feedback scores: [count, sum, sum of squares].",
    )
    latency_buckets: list[int] = Field(
        default_factory=list, max_length=64, description="Answered requests per latency bucket."
    )
    ttft_buckets: list[int] = Field(
        default_factory=list, max_length=64, description="Answered streams per time-to-first-chunk bucket."
    )


class ArmStatus(ResourceModel):
    """What one arm of the experiment has done so far, summed over every sidecar."""

    backend: DnsLabel = Field(description="The split's backend this arm sends users to.")
    requests: int = Field(default=0, ge=0, description="Requests of users assigned to this arm.")
    errors: int = Field(default=0, ge=0, description="Of those, requests every attempt of which failed.")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="errors / requests.")
    latency_p50_ms: float | None = Field(
        default=None, description="Median time to the last byte, answered requests."
    )
    latency_p95_ms: float | None = Field(default=None, description="95th percentile of that time.")
    latency_p99_ms: float | None = Field(default=None, description="99th percentile of that time.")
    ttft_p50_ms: float | None = Field(default=None, description="Median time to the first chunk, streams.")
    ttft_p95_ms: float | None = Field(default=None, description="95th percentile of that time.")
    cost_usd: str = Field(default="0", max_length=32, description="Spend of these requests, in USD.")
    feedback: int = Field(default=0, ge=0, description="Feedback scores received for this arm's answers.")
    quality: float | None = Field(default=None, description="Mean feedback score.")
    mean: float | None = Field(default=None, description="Mean of the experiment's metric.")
    low: float | None = Field(default=None, description="Lower end of the metric mean's confidence interval.")
    high: float | None = Field(
        default=None, description="Upper end of the metric mean's confidence interval."
    )
    totals: ArmTotals = Field(default_factory=ArmTotals, description="Raw counts (operator bookkeeping).")


class ExperimentStatus(ResourceModel):
    """The experiment's arms and verdict, aggregated by the operator from every sidecar's usage."""

    model: str = Field(max_length=128, description="The logical model whose split is the experiment.")
    metric: str = Field(max_length=32, description="The metric that decides the winner.")
    state: Literal["Running", "Concluded"] = Field(
        description="Running until one arm is significantly better than every other, then Concluded."
    )
    winner: str | None = Field(
        default=None, max_length=63, description="The winning arm's backend, once Concluded."
    )
    p_value: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Largest p-value of the best arm against the others (Welch's t-test, two-sided).",
    )
    summary: str = Field(default="", max_length=256, description="One line for kubectl get.")
    started_at: datetime | None = Field(default=None, description="When counting began (RFC 3339).")
    concluded_at: datetime | None = Field(default=None, description="When the winner was called (RFC 3339).")
    signature: str = Field(
        default="",
        max_length=128,
        description="The model, arms and decision settings the counts belong to; a change starts over.",
    )
    buckets_ms: list[float] = Field(
        default_factory=list, max_length=64, description="Upper bounds of the latency histogram buckets."
    )
    arms: list[ArmStatus] = Field(default_factory=list, max_length=16, description="One entry per arm.")
    counted_usage: list[CountedUsage] | None = Field(
        default=None,
        max_length=10_000,
        description="Per sidecar instance, the last usage batch these counts include: a batch sent "
        "again after an operator restart is recognised and not counted twice.",
    )


class LLMRouteStatus(ResourceModel):
    """Observed state of the route, written by the operator."""

    conditions: list[Condition] | None = Field(
        default=None,
        max_length=8,
        description="Accepted (the spec is valid and its Secrets exist) and Programmed (sidecars run it).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the status describes."
    )
    sidecars: SidecarCounts | None = Field(default=None, description="Sidecars matched and synced.")
    config_version: str | None = Field(
        default=None, max_length=128, description="Version of the latest config compiled from this route."
    )
    models: str | None = Field(
        default=None,
        max_length=1024,
        description="Logical model names, comma-separated, for kubectl get (printer columns show only one list item).",
    )
    backends: str | None = Field(
        default=None,
        max_length=1024,
        description="Backend names, comma-separated, for kubectl get.",
    )
    experiment: ExperimentStatus | None = Field(
        default=None, description="The A/B experiment of spec.experiment, per arm, with its verdict."
    )


class LLMRoute(ResourceModel):
    """LLMRoute routes a workload's LLM calls across providers, models and regions."""

    api_version: Literal["llmroute.io/v1alpha1"] = Field(default="llmroute.io/v1alpha1", alias="apiVersion")
    kind: Literal["LLMRoute"] = "LLMRoute"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: LLMRouteSpec
    status: LLMRouteStatus | None = None
