"""Typed models of the ``llmroute.io/v1alpha1`` custom resources: the resource contract.

``route.py`` (LLMRoute) and ``budget.py`` (LLMBudget) are the source of truth; ``crd.py`` and
``crdschema.py`` generate ``crds/`` from them, and ``loader.py`` reads resource YAML (what a user
applies, or a standalone sidecar's config folder) into these models. Pure code: no Kubernetes client.
"""

from .budget import LLMBudget, LLMBudgetSpec, LLMBudgetStatus
from .common import Condition, ResourceModel
from .route import LLMRoute, LLMRouteSpec, LLMRouteStatus

__all__ = [
    "Condition",
    "LLMBudget",
    "LLMBudgetSpec",
    "LLMBudgetStatus",
    "LLMRoute",
    "LLMRouteSpec",
    "LLMRouteStatus",
    "ResourceModel",
]
