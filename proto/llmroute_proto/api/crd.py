"""The two CustomResourceDefinitions, assembled from the models.

Names, short names, the ``llm`` category and the printer columns live here; the schemas come from
``crdschema.structural_schema`` over the spec and status models. ``hack/gen_crds.py`` writes the
result to ``crds/`` and fails ``make check-generated`` when the committed files are stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .budget import LLMBudgetSpec, LLMBudgetStatus
from .crdschema import JsonSchema, structural_schema
from .route import LLMRouteSpec, LLMRouteStatus

__all__ = ["CRDS", "GROUP", "VERSION", "CrdDefinition", "crd_document"]

GROUP = "llmroute.io"
VERSION = "v1alpha1"


@dataclass(frozen=True)
class CrdDefinition:
    """What distinguishes one of our CRDs: names, models, columns."""

    kind: str
    plural: str
    short_name: str
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[dict[str, Any], ...]

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def filename(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


def _column(
    name: str, path: str, kind: str = "string", description: str = "", priority: int = 0
) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if description:
        column["description"] = description
    if priority:
        column["priority"] = priority
    return column


_AGE = _column("Age", ".metadata.creationTimestamp", "date")

ROUTE = CrdDefinition(
    kind="LLMRoute",
    plural="llmroutes",
    short_name="llmr",
    description=(
        "LLMRoute routes the LLM calls of selected workloads across providers, models and regions: "
        "logical models with a strategy, per-request rules, backends with prices and credentials, and "
        "resilience, cache, privacy and rate-limit policies. The llmroute sidecar beside each selected "
        "pod enforces it."
    ),
    spec=LLMRouteSpec,
    status=LLMRouteStatus,
    columns=(
        _column("Models", ".status.models", description="Logical models the app may request."),
        _column("Backends", ".status.backends", description="Backends this route may call."),
        _column("Synced", ".status.sidecars.summary", description="Sidecars on the latest config / matched."),
        _column(
            "Ready",
            '.status.conditions[?(@.type=="Programmed")].status',
            description="Whether every matched sidecar runs the latest config.",
        ),
        _column(
            "Experiment",
            ".status.experiment.summary",
            description="The A/B experiment's state: the arm leading or the winner, and its p-value.",
        ),
        _AGE,
        _column(
            "Version", ".status.configVersion", description="Latest compiled config version.", priority=1
        ),
    ),
)

BUDGET = CrdDefinition(
    kind="LLMBudget",
    plural="llmbudgets",
    short_name="llmb",
    description=(
        "LLMBudget caps LLM spend per period (daily, weekly or monthly) for routes, a namespace or a "
        "tenant: past the soft limit traffic is downgraded, past the hard limit it is refused, and the "
        "limit holds across all sidecars together."
    ),
    spec=LLMBudgetSpec,
    status=LLMBudgetStatus,
    columns=(
        _column("Limit", ".spec.limits.hard", description="Hard limit per period, in USD."),
        _column("Spent", ".status.spent", description="Spend in the current period, in USD."),
        _column("Remaining", ".status.remaining", description="Hard limit minus spend."),
        _column("Forecast", ".status.forecast", description="Expected spend at the end of the period."),
        _column("State", ".status.state", description="Normal, SoftLimited or Exhausted."),
        _AGE,
        _column("Period", ".spec.period.type", description="Budget period.", priority=1),
        _column("Reset", ".status.resetAt", "date", description="When spend resets.", priority=1),
    ),
)

CRDS: tuple[CrdDefinition, ...] = (ROUTE, BUDGET)


def _root_schema(crd: CrdDefinition) -> JsonSchema:
    spec = structural_schema(crd.spec)
    status = structural_schema(crd.status)
    spec["description"] = spec.get("description") or f"Desired state of the {crd.kind}."
    return {
        "type": "object",
        "description": crd.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this object: llmroute.io/v1alpha1.",
            },
            "kind": {"type": "string", "description": f"Kind of this object: {crd.kind}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd_document(crd: CrdDefinition) -> dict[str, Any]:
    """The complete ``apiextensions.k8s.io/v1`` CustomResourceDefinition for ``crd``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": crd.name,
            "annotations": {"llmroute.io/generated-by": "hack/gen_crds.py (edit the models, then make crds)"},
            "labels": {"app.kubernetes.io/part-of": "llmroute"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": crd.kind,
                "listKind": f"{crd.kind}List",
                "plural": crd.plural,
                "singular": crd.kind.lower(),
                "shortNames": [crd.short_name],
                "categories": ["llm"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(crd.columns),
                    "schema": {"openAPIV3Schema": _root_schema(crd)},
                }
            ],
        },
    }
