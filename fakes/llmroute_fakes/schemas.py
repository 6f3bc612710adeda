"""A deterministic value that satisfies a JSON Schema: tool-call arguments and structured outputs.

Used by ``replies``. It covers what the SDKs generate from Pydantic models and what people write by
hand for tools: ``$ref``/``$defs``, ``anyOf``/``oneOf``/``allOf``, ``enum``/``const``, nullable types,
nested objects and arrays, and Gemini's upper-case OpenAPI type names. Every declared property is
filled (OpenAI's strict mode requires all of them), so SDK-side validation such as
``chat.completions.parse`` or ``generate_content(...).parsed`` accepts the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["schema_instance"]

_MAX_DEPTH = 8
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "email": "fake@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def schema_instance(schema: Mapping[str, Any] | None, *, name: str = "value") -> Any:
    """A value valid against ``schema``; ``name`` seeds string values so they read sensibly."""
    root = schema or {}
    return _instance(root, root, name, 0)


def _instance(schema: Mapping[str, Any], root: Mapping[str, Any], name: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _instance(_resolve(ref, root), root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            # Prefer a non-null alternative: ``Optional[X]`` should still produce an X.
            chosen = next((o for o in options if isinstance(o, Mapping) and _type(o) != "null"), options[0])
            return _instance(chosen, root, name, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {}
        for part in all_of:
            if isinstance(part, Mapping):
                merged.update(part)
        return _instance(merged, root, name, depth + 1)

    kind = _type(schema)
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {
            key: _instance(sub, root, key, depth + 1)
            for key, sub in properties.items()
            if isinstance(sub, Mapping)
        }
    if kind == "array":
        items = schema.get("items")
        return [_instance(items, root, name, depth + 1)] if isinstance(items, Mapping) else []
    if kind == "string":
        fmt = schema.get("format")
        return _FORMATS.get(fmt, f"fake-{name}") if isinstance(fmt, str) else f"fake-{name}"
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    # No type at all: any value validates; a string is the most readable.
    return f"fake-{name}"


def _type(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), None)
    return kind.lower() if isinstance(kind, str) else None


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, Mapping):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node if isinstance(node, Mapping) else {}
