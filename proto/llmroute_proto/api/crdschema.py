"""Turn a resource model into a Kubernetes *structural* OpenAPI v3 schema.

Pydantic's JSON Schema is close to what a CRD needs but not the same dialect: it uses ``$ref``,
``anyOf [T, null]`` for optional fields, numeric ``exclusiveMinimum`` and ``additionalProperties:
false``, none of which a structural schema allows. This module rewrites one into the other and refuses
a field without a description, so ``kubectl explain`` always has something to say. ``crd.py`` wraps
the result into CustomResourceDefinitions; ``tests/unit/test_crd_contract.py`` checks the committed
YAML against the models by walking both independently.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["MissingDescriptionError", "structural_schema"]

# Keys of a JSON Schema node that a structural schema keeps as they are.
_KEPT = frozenset(
    {
        "type",
        "description",
        "default",
        "enum",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
    }
)

JsonSchema = dict[str, Any]


class MissingDescriptionError(ValueError):
    """A field reached the CRD without a description."""


def structural_schema(model: type[BaseModel]) -> JsonSchema:
    """The structural schema of ``model`` (by alias), with every field described."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, JsonSchema] = raw.pop("$defs", {})
    converted = _convert(raw, defs, path=model.__name__)
    missing: list[str] = []
    _collect_undescribed(converted, model.__name__, missing)
    if missing:
        raise MissingDescriptionError("fields without a description: " + ", ".join(missing))
    return converted


def _resolve(node: JsonSchema, defs: dict[str, JsonSchema]) -> tuple[JsonSchema, JsonSchema]:
    """Split ``node`` into (the schema it stands for, the sibling keys that override it)."""
    siblings = {k: v for k, v in node.items() if k not in {"$ref", "anyOf", "allOf"}}
    if "$ref" in node:
        return defs[node["$ref"].rsplit("/", 1)[-1]], siblings
    if "allOf" in node and len(node["allOf"]) == 1:
        target, more = _resolve(node["allOf"][0], defs)
        return target, {**more, **siblings}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions other than Optional[T] have no structural schema: {node}")
        target, more = _resolve(options[0], defs)
        return target, {**more, **siblings}
    return node, {}


def _convert(node: JsonSchema, defs: dict[str, JsonSchema], path: str) -> JsonSchema:
    target, overrides = _resolve(node, defs)
    if target is not node:
        merged = _convert(target, defs, path)
        for key, value in overrides.items():
            if key == "default" and value is None:
                continue
            if key == "title":
                continue
            merged[key] = _convert_value(key, value, defs, path)
        return _normalise(merged)
    out: JsonSchema = {}
    for key, value in node.items():
        if key in {"title", "additionalProperties"} and not isinstance(value, dict):
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        out[key] = _convert_value(key, value, defs, path)
    return _normalise(out)


def _convert_value(key: str, value: Any, defs: dict[str, JsonSchema], path: str) -> Any:
    if key == "properties":
        return {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
    if key in {"items", "additionalProperties"} and isinstance(value, dict):
        return _convert(value, defs, f"{path}[]")
    if key.startswith("x-kubernetes-") or key in _KEPT or key in {"exclusiveMinimum", "exclusiveMaximum"}:
        return value
    if key == "title":
        return value
    raise ValueError(f"{path}: JSON Schema keyword {key!r} has no structural equivalent here")


def _normalise(schema: JsonSchema) -> JsonSchema:
    """Final touches: OpenAPI v3.0 exclusive bounds, no titles, a type on every node."""
    schema.pop("title", None)
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = schema.get(bound)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            schema[limit] = value
            schema[bound] = True
    if "properties" in schema:
        schema.setdefault("type", "object")
    if "enum" in schema and "type" not in schema:
        schema["type"] = "string"
    # A stable, readable key order: what it is, what it means, then the constraints.
    return dict(sorted(schema.items(), key=lambda item: _KEY_ORDER.get(item[0], len(_KEY_ORDER))))


_KEY_ORDER = {key: index for index, key in enumerate(("type", "description", "default", "enum", "format"))}


def _collect_undescribed(schema: JsonSchema, path: str, missing: list[str]) -> None:
    for name, sub in schema.get("properties", {}).items():
        if not sub.get("description"):
            missing.append(f"{path}.{name}")
        _collect_undescribed(sub, f"{path}.{name}", missing)
    items = schema.get("items")
    if isinstance(items, dict):
        _collect_undescribed(items, f"{path}[]", missing)
