"""Standalone mode's compile in a child process: the same config as in-process, the same refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute_sidecar.config.standalone import StandaloneSource, compile_isolated, compile_path
from llmroute_sidecar.config.store import ConfigError, ConfigStore

GOOD = """\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {name: chat, namespace: team}
spec:
  models: [{name: chat, backends: [local]}]
  backends:
  - {name: local, provider: openai-compatible, model: m, endpoint: "http://127.0.0.1:9/v1"}
"""
UNKNOWN_BACKEND = GOOD.replace("backends: [local]", "backends: [missing]")


def test_the_child_compiles_what_the_process_would(tmp_path: Path) -> None:
    path = tmp_path / "route.yaml"
    path.write_text(GOOD)
    isolated = compile_isolated(path, namespace=None, region="eu-west-1")
    assert isolated == compile_path(path, region="eu-west-1")
    assert [r.name for r in isolated.routes] == ["chat"]


def test_a_refusal_keeps_its_message_and_the_last_good_config(tmp_path: Path) -> None:
    path = tmp_path / "route.yaml"
    path.write_text(UNKNOWN_BACKEND)
    with pytest.raises(ConfigError, match="missing"):
        compile_isolated(path, namespace=None, region="")
    path.write_text(GOOD)
    store = ConfigStore()
    source = StandaloneSource(path, store, namespace=None, region="")
    assert source.load()
    good = store.version
    path.write_text("kind: [not yaml")
    assert source.load()  # still serving
    assert store.version == good and store.last_error
