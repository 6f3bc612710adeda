"""CEL validation rules, written once and attached to the models they guard.

A rule is a ``x-kubernetes-validations`` entry that ``crdschema.py`` copies into the CRD, so the API
server refuses a bad resource at ``kubectl apply``. The models re-check the same rules in Python
(``route.py``/``budget.py`` validators), so standalone sidecar configs and unit tests see the same
refusals without an API server; the e2e suite proves the CEL side.
"""

from __future__ import annotations

from typing import Any

__all__ = ["rule", "rules"]


def rule(expression: str, message: str, *, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry; ``message`` must name the field it is about."""
    entry = {"rule": expression, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def rules(*entries: dict[str, str]) -> dict[str, Any]:
    """The ``json_schema_extra`` that attaches ``entries`` to a model or field."""
    return {"x-kubernetes-validations": list(entries)}
