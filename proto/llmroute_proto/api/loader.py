"""Read resource YAML (LLMRoute, LLMBudget, Secret) into typed models.

The same files a platform team applies with ``kubectl`` are what a standalone sidecar runs from
(``llmroute-sidecar --config PATH``, one file or a folder) and what the examples test validates. Errors
name the file, the document and the field in the resource's own camelCase path, the way the API server
would. Secret values may reference environment variables as ``${NAME}`` so real keys stay out of files.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .budget import LLMBudget
from .crd import GROUP, VERSION
from .route import LLMRoute

__all__ = ["ResourceError", "Resources", "SecretData", "load_paths", "load_text"]

_API_VERSION = f"{GROUP}/{VERSION}"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ResourceError(ValueError):
    """A resource file that cannot be used; the message names file, object and field."""


@dataclass(frozen=True)
class SecretData:
    """A Secret's decoded string data."""

    namespace: str
    name: str
    data: Mapping[str, str]


@dataclass
class Resources:
    """Everything found in a set of resource files."""

    routes: list[LLMRoute] = field(default_factory=list)
    budgets: list[LLMBudget] = field(default_factory=list)
    secrets: list[SecretData] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def extend(self, other: Resources) -> None:
        self.routes += other.routes
        self.budgets += other.budgets
        self.secrets += other.secrets
        self.ignored += other.ignored


def load_paths(paths: Iterable[Path], *, environ: Mapping[str, str] | None = None) -> Resources:
    """Load every ``*.yaml``/``*.yml`` file under ``paths`` (files or folders), in name order."""
    env = os.environ if environ is None else environ
    found = Resources()
    for path in paths:
        files = (
            sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"}) if path.is_dir() else [path]
        )
        for file in files:
            found.extend(load_text(file.read_text(), source=str(file), environ=env))
    return found


def load_text(text: str, *, source: str = "<string>", environ: Mapping[str, str] | None = None) -> Resources:
    """Load the YAML documents in ``text``."""
    env = os.environ if environ is None else environ
    found = Resources()
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ResourceError(f"{source}: not valid YAML: {exc}") from exc
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        where = f"{source} (document {index + 1})"
        if not isinstance(doc, dict):
            raise ResourceError(f"{where}: expected a Kubernetes object, got {type(doc).__name__}")
        _load_one(doc, where, env, found)
    return found


def _load_one(doc: dict[str, Any], where: str, env: Mapping[str, str], found: Resources) -> None:
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version == "v1" and kind == "List":
        # What `kubectl get -o yaml` prints for several objects; `kubectl apply` takes it too.
        for index, item in enumerate(doc.get("items") or []):
            if not isinstance(item, dict):
                raise ResourceError(f"{where}: items[{index}] is not a Kubernetes object")
            _load_one(item, f"{where} items[{index}]", env, found)
        return
    name = (doc.get("metadata") or {}).get("name", "<unnamed>")
    where = f"{where} {kind}/{name}"
    if api_version == _API_VERSION and kind in ("LLMRoute", "LLMBudget"):
        model = LLMRoute if kind == "LLMRoute" else LLMBudget
        try:
            parsed = model.model_validate(doc)
        except ValidationError as exc:
            raise ResourceError(f"{where}: {_describe(exc)}") from exc
        if isinstance(parsed, LLMRoute):
            found.routes.append(parsed)
        else:
            found.budgets.append(parsed)
    elif isinstance(api_version, str) and api_version.startswith(f"{GROUP}/"):
        raise ResourceError(f"{where}: unknown kind or version {api_version} {kind}")
    elif api_version == "v1" and kind == "Secret":
        found.secrets.append(_secret(doc, where, env))
    else:
        found.ignored.append(f"{api_version} {kind}/{name}")


def _secret(doc: dict[str, Any], where: str, env: Mapping[str, str]) -> SecretData:
    meta = doc.get("metadata") or {}
    data: dict[str, str] = {}
    for key, value in (doc.get("data") or {}).items():
        try:
            data[key] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ResourceError(f"{where}: data.{key} is not base64-encoded text") from exc
    for key, value in (doc.get("stringData") or {}).items():
        data[key] = str(value)
    expanded = {key: _expand(value, f"{where} key {key}", env) for key, value in data.items()}
    return SecretData(
        namespace=str(meta.get("namespace", "default")), name=str(meta.get("name", "")), data=expanded
    )


def _expand(value: str, where: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ResourceError(f"{where}: environment variable {name} is not set")
        return env[name]

    return _ENV_REF.sub(substitute, value)


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``spec.backends[0].model: Field required``, one per line."""
    lines = []
    for error in exc.errors(include_url=False):
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"].removeprefix("Value error, ")
        # Model-level validators already start their message with the field path they are about.
        lines.append(f"{path}: {message}" if path and not message.startswith(path) else message)
    return "; ".join(lines)
