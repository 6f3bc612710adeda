"""docs/reference.md is generated from the committed CRDs and documents every field of them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"
CRD_FILES = ("llmroute.io_llmroutes.yaml", "llmroute.io_llmbudgets.yaml")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "hack" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first, as the import system does: its dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _schema(filename: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / filename).read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _leaves(schema: dict[str, Any], path: str) -> list[str]:
    """Leaf field paths, walked here independently of the generator: lists of objects go one level
    deeper as ``path[]``, maps of objects as ``path.<key>``; anything else is a leaf."""
    out: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        sub_path = f"{path}.{name}" if path else name
        node, suffix = sub, ""
        while "properties" not in node:
            if isinstance(node.get("items"), dict):
                node, suffix = node["items"], suffix + "[]"
            elif isinstance(node.get("additionalProperties"), dict):
                node, suffix = node["additionalProperties"], suffix + ".<key>"
            else:
                break
        if "properties" in node:
            out.extend(_leaves(node, sub_path + suffix))
        else:
            out.append(sub_path)
    return out


def test_reference_is_fresh() -> None:
    rendered = _generator().render()
    assert REFERENCE.read_text() == rendered, "docs/reference.md is stale: run `make docs`"


def test_render_is_deterministic() -> None:
    gen = _generator()
    assert gen.render() == gen.render()


@pytest.mark.parametrize("filename", CRD_FILES)
def test_every_leaf_field_path_is_documented(filename: str) -> None:
    text = REFERENCE.read_text()
    schema = _schema(filename)
    leaves = _leaves(schema["properties"]["spec"], "spec") + _leaves(schema["properties"]["status"], "status")
    assert len(leaves) > 10
    missing = [path for path in leaves if f"| `{path}` |" not in text]
    assert not missing, f"fields of {filename} missing from docs/reference.md (run `make docs`): {missing}"


@pytest.mark.parametrize("filename", CRD_FILES)
def test_every_cel_rule_and_printer_column_is_documented(filename: str) -> None:
    text = REFERENCE.read_text()
    crd = yaml.safe_load((ROOT / "crds" / filename).read_text())
    version = crd["spec"]["versions"][0]
    messages: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        messages.extend(" ".join(r["message"].split()) for r in node.get("x-kubernetes-validations", []))
        for sub in node.get("properties", {}).values():
            walk(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])

    walk(version["schema"]["openAPIV3Schema"])
    assert messages
    assert [m for m in messages if f"- {m} — " not in text] == []
    for column in version["additionalPrinterColumns"]:
        assert f"| {column['name'].upper()} | {column['type']} | `{column['jsonPath']}` |" in text
    for short in crd["spec"]["names"]["shortNames"]:
        assert f"| Short names | `{short}` |" in text


def test_check_flag_names_the_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = _generator()
    out = tmp_path / "docs" / "reference.md"
    out.parent.mkdir()
    out.write_text("stale\n")
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(gen, "OUT", out)
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/reference.md" in err
    assert "make docs" in err
    assert out.read_text() == "stale\n"
    assert gen.main([]) == 0
    assert out.read_text() == REFERENCE.read_text()
    assert gen.main(["--check"]) == 0
