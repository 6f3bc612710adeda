"""The committed CRDs and the Python models describe the same resources, field for field.

Two independent walks: one over the models' annotations (``model_fields``), one over the CRD YAML
in ``crds/``. Any field, type, enum or requiredness on one side only fails the test, whether someone
edited the YAML by hand or changed a model without ``make crds``. The generator is not used to read
the YAML, so it cannot paper over its own mistakes.
"""

from __future__ import annotations

import importlib.util
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from llmroute_proto.api import LLMBudgetSpec, LLMBudgetStatus, LLMRouteSpec, LLMRouteStatus

ROOT = Path(__file__).resolve().parents[2]

Shape = dict[str, tuple[str, bool, tuple[str, ...]]]  # path -> (kind, required, enum values)


def _unwrap(annotation: Any) -> Any:
    """Strip Optional[...] and Annotated[...] down to the underlying type."""
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [a for a in get_args(annotation) if a is not type(None)]
            assert len(options) == 1, f"unsupported union {annotation}"
            annotation = options[0]
        else:
            return annotation


def _kind(annotation: Any) -> tuple[str, tuple[str, ...], Any]:
    """(kind, enum values, element type to descend into)."""
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return "string", tuple(str(v) for v in get_args(annotation)), None
    if origin is list:
        return "array", (), get_args(annotation)[0]
    if origin is dict:
        return "map", (), None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object", (), annotation
    scalar = {str: "string", int: "integer", float: "number", bool: "boolean", datetime: "string"}
    return scalar[annotation], (), None


def model_shape(model: type[BaseModel], prefix: str = "") -> Shape:
    shape: Shape = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        kind, enum, inner = _kind(info.annotation)
        shape[path] = (kind, info.is_required(), enum)
        while kind == "array":
            kind, enum, inner_next = _kind(inner)
            path += "[]"
            shape[path] = (kind, True, enum)
            inner = inner_next
        if kind == "object":
            shape.update(model_shape(inner, path))
    return shape


def crd_shape(schema: dict[str, Any], prefix: str = "") -> Shape:
    shape: Shape = {}
    required = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}"
        shape[path] = (_crd_kind(sub), name in required, tuple(str(v) for v in sub.get("enum", ())))
        node = sub
        while node.get("type") == "array":
            node = node["items"]
            path += "[]"
            shape[path] = (_crd_kind(node), True, tuple(str(v) for v in node.get("enum", ())))
        if node.get("type") == "object" and "properties" in node:
            shape.update(crd_shape(node, path))
    return shape


def _crd_kind(node: dict[str, Any]) -> str:
    if node.get("type") == "object" and "additionalProperties" in node:
        return "map"
    return str(node["type"])


def diff(models: Shape, crd: Shape) -> list[str]:
    problems = [f"{p}: only in the models" for p in sorted(models.keys() - crd.keys())]
    problems += [f"{p}: only in the CRD" for p in sorted(crd.keys() - models.keys())]
    for path in sorted(models.keys() & crd.keys()):
        if models[path] != crd[path]:
            problems.append(f"{path}: models say {models[path]}, CRD says {crd[path]}")
    return problems


def _load_crd(plural: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "crds" / f"llmroute.io_{plural}.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _root(plural: str) -> dict[str, Any]:
    schema: dict[str, Any] = _load_crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


CASES = [
    ("llmroutes", "spec", LLMRouteSpec),
    ("llmroutes", "status", LLMRouteStatus),
    ("llmbudgets", "spec", LLMBudgetSpec),
    ("llmbudgets", "status", LLMBudgetStatus),
]


@pytest.mark.parametrize(("plural", "part", "model"), CASES, ids=[f"{p}.{s}" for p, s, _ in CASES])
def test_crd_matches_models(plural: str, part: str, model: type[BaseModel]) -> None:
    crd = crd_shape(_root(plural)["properties"][part])
    problems = diff(model_shape(model), crd)
    assert not problems, "CRD and models drifted (edit the models, then `make crds`):\n" + "\n".join(problems)


@pytest.mark.parametrize("plural", ["llmroutes", "llmbudgets"])
def test_every_crd_field_is_described(plural: str) -> None:
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, sub in node.get("properties", {}).items():
            if name != "metadata" and not sub.get("description"):
                missing.append(f"{path}.{name}")
            walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(_root(plural), plural)
    assert not missing, f"fields without description (kubectl explain shows nothing): {missing}"


def test_diff_catches_a_field_on_one_side_only() -> None:
    """The comparator itself can fail: a field added to only one side is reported."""

    class Extra(LLMBudgetStatus):
        surprise: int = 0

    crd = crd_shape(_root("llmbudgets")["properties"]["status"])
    assert diff(model_shape(Extra), crd) == [".surprise: only in the models"]
    crd_extra = dict(crd)
    crd_extra[".spent2"] = ("string", False, ())
    assert diff(model_shape(LLMBudgetStatus), crd_extra) == [".spent2: only in the CRD"]
    crd_enum = dict(crd)
    crd_enum[".state"] = ("string", False, ("Normal",))
    assert diff(model_shape(LLMBudgetStatus), crd_enum)[0].startswith(".state: models say")


@pytest.mark.parametrize(
    ("plural", "kind", "short", "columns"),
    [
        ("llmroutes", "LLMRoute", "llmr", ["Models", "Backends", "Synced", "Ready", "Experiment", "Age"]),
        ("llmbudgets", "LLMBudget", "llmb", ["Limit", "Spent", "Remaining", "Forecast", "State", "Age"]),
    ],
)
def test_crd_names_columns_and_status(plural: str, kind: str, short: str, columns: list[str]) -> None:
    crd = _load_crd(plural)
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{plural}.llmroute.io"
    assert spec["group"] == "llmroute.io"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["llm"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    default_columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert default_columns == columns


def test_crds_are_fresh() -> None:
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "hack" / "gen_crds.py")
    assert spec is not None and spec.loader is not None
    gen_crds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_crds)
    rendered = gen_crds.render()
    for name, text in rendered.items():
        assert (ROOT / "crds" / name).read_text() == text, f"crds/{name} is stale: run `make crds`"
