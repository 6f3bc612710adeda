"""The ``LLMBudget`` resource: a spending limit over routes, a namespace or a tenant, per period.

The operator aggregates the usage sidecars report into ``status`` (spent, remaining, forecast,
state) and pushes the resulting state and spending allowances back; the soft limit downgrades
traffic to a cheaper tier or backend, the hard limit stops it. ``route.py`` holds the routing side;
``crdschema.py`` turns these models into ``crds/llmroute.io_llmbudgets.yaml``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from .cel import rule, rules
from .common import Condition, DnsLabel, Money, ResourceModel, money

__all__ = [
    "BudgetLimits",
    "BudgetScope",
    "CountedUsage",
    "DowngradeStep",
    "LLMBudget",
    "LLMBudgetSpec",
    "LLMBudgetStatus",
    "Period",
    "SoftLimitAction",
]

BudgetState = Literal["Normal", "SoftLimited", "Exhausted"]


class BudgetScope(ResourceModel):
    """What the budget counts: exactly one of routes, the whole namespace, a tenant, or a user."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "(has(self.routes) ? 1 : 0) + ((has(self.namespace) && self.namespace) ? 1 : 0)"
                " + (has(self.tenant) ? 1 : 0) + (has(self.user) ? 1 : 0) == 1",
                "spec.scope must set exactly one of routes, namespace: true, tenant, or user",
            )
        )
    }

    routes: list[DnsLabel] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="LLMRoutes in this namespace whose spend counts, by name.",
    )
    namespace: bool | None = Field(
        default=None,
        description="true: every route in this namespace counts.",
    )
    tenant: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Counts requests carrying this x-llmroute-tenant header value, across the namespace's routes.",
    )
    user: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description=(
            "Counts requests of this end user (the x-llmroute-user header, else the request's OpenAI `user` "
            "field), across the namespace's routes."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetScope:
        chosen = [
            self.routes is not None,
            bool(self.namespace),
            self.tenant is not None,
            self.user is not None,
        ]
        if sum(chosen) != 1:
            raise ValueError("spec.scope must set exactly one of routes, namespace: true, tenant, or user")
        return self


class Period(ResourceModel):
    """The window spend is counted over; it resets at the start of each period."""

    type: Literal["daily", "weekly", "monthly"] = Field(
        description="Length of the period: daily, weekly (from Monday) or monthly (from the 1st)."
    )
    timezone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$",
        description="IANA time zone in which periods start, e.g. Europe/Berlin.",
    )


class BudgetLimits(ResourceModel):
    """Money limits for one period."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule("double(self.hard) > 0.0", "spec.limits.hard must be positive", field_path=".hard"),
            rule(
                "!has(self.soft) || double(self.soft) <= double(self.hard)",
                "spec.limits.soft must not exceed spec.limits.hard",
                field_path=".soft",
            ),
        )
    }

    soft: Money | None = Field(
        default=None,
        description='Spend at which traffic is downgraded (onSoftLimit), as a decimal string, e.g. "800".',
    )
    hard: Money = Field(
        description='Spend at which requests are refused with 429, as a decimal string, e.g. "1000".',
    )
    currency: Literal["USD"] = Field(default="USD", description="Currency of the limits; prices are in USD.")

    @model_validator(mode="after")
    def _ordered(self) -> BudgetLimits:
        if money(self.hard) <= 0:
            raise ValueError("spec.limits.hard must be positive")
        if self.soft is not None and money(self.soft) > money(self.hard):
            raise ValueError("spec.limits.soft must not exceed spec.limits.hard")
        return self


class DowngradeStep(ResourceModel):
    """A further downgrade once spend passes a share of the hard limit."""

    at_percent: int = Field(ge=1, le=100, description="Percent of the hard limit at which this step applies.")
    downgrade_to: str = Field(
        min_length=1,
        max_length=63,
        description="A tier (small, medium, large) or a backend name; must be cheaper than the step before.",
    )


class SoftLimitAction(ResourceModel):
    """What happens past the soft limit."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "!has(self.ladder) || self.ladder.map(s, s.atPercent).isSorted()",
                "spec.onSoftLimit.ladder[].atPercent must increase from step to step",
                field_path=".ladder",
            )
        )
    }

    downgrade_to: str = Field(
        min_length=1,
        max_length=63,
        description=(
            "A tier (small, medium, large) or a backend name that requests are sent to instead; "
            "it must be cheaper than what it replaces."
        ),
    )
    ladder: list[DowngradeStep] | None = Field(
        default=None,
        max_length=8,
        description="Further downgrades between the soft and the hard limit, by percent of the hard limit.",
    )

    @model_validator(mode="after")
    def _sorted(self) -> SoftLimitAction:
        steps = [s.at_percent for s in self.ladder or []]
        if steps != sorted(steps):
            raise ValueError("spec.onSoftLimit.ladder[].atPercent must increase from step to step")
        return self


class LLMBudgetSpec(ResourceModel):
    """Desired spending limit."""

    model_config = ResourceModel.model_config | {
        "json_schema_extra": rules(
            rule(
                "!has(self.onSoftLimit) || has(self.limits.soft)",
                "spec.onSoftLimit needs spec.limits.soft",
                field_path=".onSoftLimit",
            )
        )
    }

    scope: BudgetScope = Field(description="What the budget counts: routes, the namespace, or a tenant.")
    period: Period = Field(description="The window spend is counted over.")
    limits: BudgetLimits = Field(description="Soft and hard limits per period.")
    on_soft_limit: SoftLimitAction | None = Field(
        default=None,
        description="The downgrade applied past the soft limit.",
    )
    alerts: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default=[50, 80, 100],
        max_length=10,
        description="Percentages of the hard limit at which a Kubernetes Event and a metric report the spend.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    failure_mode: Literal["closed", "open"] = Field(
        default="closed",
        description=(
            "What a sidecar does once it has spent the allowance it holds and cannot reach the operator for "
            "more: closed refuses requests in scope with 429 budget_exceeded; open admits them and buffers "
            "their usage until the operator is back, so the spend is counted late but never lost. "
            "Either way a sidecar is never silently unlimited: open is a choice, and it is reported."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> LLMBudgetSpec:
        if self.on_soft_limit is not None and self.limits.soft is None:
            raise ValueError("spec.onSoftLimit needs spec.limits.soft")
        if len(set(self.alerts)) != len(self.alerts):
            raise ValueError("spec.alerts must not repeat a percentage")
        return self


class CountedUsage(ResourceModel):
    """The last usage batch of one sidecar instance that ``spent`` includes."""

    sidecar: str = Field(
        min_length=1, max_length=300, description="The sidecar instance: its pod's uid and its own id."
    )
    sequence: int = Field(ge=1, description="Sequence number of the last batch of that sidecar counted.")
    at: datetime = Field(description="When that batch was counted (RFC 3339).")


class LLMBudgetStatus(ResourceModel):
    """Observed spend, written by the operator; it survives operator restarts."""

    spent: Money | None = Field(default=None, description="Spend in the current period, in USD.")
    remaining: Money | None = Field(default=None, description="Hard limit minus spend, never below 0.")
    forecast: Money | None = Field(
        default=None, description="Spend expected by the end of the period at the current run rate."
    )
    state: BudgetState | None = Field(
        default=None,
        description="Normal, SoftLimited (past the soft limit: downgraded) or Exhausted (past the hard limit).",
    )
    period_start: datetime | None = Field(default=None, description="Start of the current period (RFC 3339).")
    reset_at: datetime | None = Field(
        default=None, description="When the current period ends and spend resets."
    )
    outstanding_allowance: Money | None = Field(
        default=None,
        description=(
            "Allowance leased to sidecars and not yet counted as spend, at the last status write. An "
            "operator that restarts keeps this much reserved for one lease lifetime, so no money is "
            "granted twice."
        ),
    )
    alerted_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Highest alert threshold already reported in this period.",
    )
    counted_usage: list[CountedUsage] | None = Field(
        default=None,
        max_length=10000,
        description=(
            "Per sidecar that reported usage in the last hour, the last usage batch whose spend `spent` "
            "includes, written together with it. A batch sent again after the operator crashed before "
            "acknowledging it is recognised here and not counted twice."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["sidecar"]},
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=8,
        description="Accepted (the spec is valid) and Ready (spend is being aggregated).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the status describes."
    )


class LLMBudget(ResourceModel):
    """LLMBudget caps LLM spend per period for routes, a namespace or a tenant."""

    api_version: Literal["llmroute.io/v1alpha1"] = Field(default="llmroute.io/v1alpha1", alias="apiVersion")
    kind: Literal["LLMBudget"] = "LLMBudget"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: LLMBudgetSpec
    status: LLMBudgetStatus | None = None
