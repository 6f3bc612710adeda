"""Lookup order of the control-plane binaries (llmroute_operator.devcluster.binaries), on temp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute_operator.devcluster import binaries
from llmroute_operator.devcluster.binaries import ETCD, HELM, KUBE_APISERVER, KUBECTL, locate
from llmroute_operator.devcluster.versions import Versions

PINNED = Versions(kubernetes="v1.36.3", kubernetes_staging="v0.36.3", etcd="v3.6.16", helm="v3.22.0")


def executable(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def cached(cache: Path, name: str, version: str) -> Path:
    path = executable(cache, name)
    binaries.stamp_path(path).write_text(version + "\n")
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    directory = tmp_path / "cache"
    cached(directory, KUBE_APISERVER, PINNED.kubernetes)
    cached(directory, ETCD, PINNED.etcd)
    cached(directory, HELM, PINNED.helm)
    return directory


def find(
    name: str, env: dict[str, str], cache: Path, python_bin: Path | None = None
) -> binaries.Found | None:
    return locate(name, env=env, pinned=PINNED, cache_dir=cache, python_bin_dir=python_bin)


@pytest.mark.parametrize(
    ("name", "var"),
    [
        (KUBE_APISERVER, "TEST_ASSET_KUBE_APISERVER"),
        (ETCD, "TEST_ASSET_ETCD"),
        (KUBECTL, "TEST_ASSET_KUBECTL"),
        (HELM, "TEST_ASSET_HELM"),
    ],
)
def test_test_asset_variable_wins_over_everything(tmp_path: Path, cache: Path, name: str, var: str) -> None:
    own = executable(tmp_path / "own", f"my-{name}")
    assets = tmp_path / "assets"
    for each in (KUBE_APISERVER, ETCD, KUBECTL, HELM):
        executable(assets, each)
    python_bin = tmp_path / "venv-bin"
    executable(python_bin, KUBECTL)

    found = find(name, {var: str(own), "KUBEBUILDER_ASSETS": str(assets)}, cache, python_bin)

    assert found is not None
    assert found.path == own
    assert found.source == f"${var}"


@pytest.mark.parametrize("name", [KUBE_APISERVER, ETCD, KUBECTL, HELM])
def test_kubebuilder_assets_wins_over_cache_and_python_env(tmp_path: Path, cache: Path, name: str) -> None:
    assets = tmp_path / "assets"
    for each in (KUBE_APISERVER, ETCD, KUBECTL, HELM):
        executable(assets, each)
    python_bin = tmp_path / "venv-bin"
    executable(python_bin, KUBECTL)

    found = find(name, {"KUBEBUILDER_ASSETS": str(assets)}, cache, python_bin)

    assert found is not None
    assert found.path == assets / name
    assert found.source == "$KUBEBUILDER_ASSETS"


@pytest.mark.parametrize("name", [KUBE_APISERVER, ETCD, HELM])
def test_cache_is_used_when_no_variable_is_set(cache: Path, name: str) -> None:
    found = find(name, {}, cache)

    assert found is not None
    assert found.path == cache / name
    assert "build cache" in found.source


def test_empty_variables_count_as_unset(cache: Path) -> None:
    found = find(ETCD, {"TEST_ASSET_ETCD": "", "KUBEBUILDER_ASSETS": ""}, cache)

    assert found is not None
    assert found.path == cache / ETCD


@pytest.mark.parametrize(("name", "stamp"), [(KUBE_APISERVER, "v1.35.0"), (ETCD, None)])
def test_cached_binary_of_another_version_or_unstamped_needs_a_build(
    tmp_path: Path, name: str, stamp: str | None
) -> None:
    cache = tmp_path / "cache"
    if stamp is None:
        executable(cache, name)
    else:
        cached(cache, name, stamp)

    assert find(name, {}, cache) is None


def test_nothing_anywhere_means_build(tmp_path: Path) -> None:
    assert find(KUBE_APISERVER, {}, tmp_path / "empty") is None


@pytest.mark.parametrize("target", ["missing", "not-executable"])
def test_variable_naming_no_executable_is_an_error(tmp_path: Path, cache: Path, target: str) -> None:
    path = tmp_path / target
    if target == "not-executable":
        path.write_text("data")

    with pytest.raises(binaries.BinaryNotFoundError, match="TEST_ASSET_KUBE_APISERVER"):
        find(KUBE_APISERVER, {"TEST_ASSET_KUBE_APISERVER": str(path)}, cache)


@pytest.mark.parametrize("name", [KUBE_APISERVER, ETCD])
def test_assets_dir_must_hold_apiserver_and_etcd(tmp_path: Path, cache: Path, name: str) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()

    with pytest.raises(binaries.BinaryNotFoundError, match="KUBEBUILDER_ASSETS"):
        find(name, {"KUBEBUILDER_ASSETS": str(assets)}, cache)


def test_kubectl_and_helm_fall_through_an_assets_dir_without_them(tmp_path: Path, cache: Path) -> None:
    assets = tmp_path / "assets"
    executable(assets, KUBE_APISERVER)
    executable(assets, ETCD)
    python_bin = tmp_path / "venv-bin"
    venv_kubectl = executable(python_bin, KUBECTL)
    env = {"KUBEBUILDER_ASSETS": str(assets), "PATH": ""}

    kubectl = find(KUBECTL, env, cache, python_bin)
    helm = find(HELM, env, cache, python_bin)

    assert kubectl is not None and kubectl.path == venv_kubectl
    assert helm is not None and helm.path == cache / HELM


def test_kubectl_prefers_the_python_env_over_path(tmp_path: Path, cache: Path) -> None:
    python_bin = tmp_path / "venv-bin"
    venv_kubectl = executable(python_bin, KUBECTL)
    on_path = executable(tmp_path / "usr-bin", KUBECTL)

    with_venv = find(KUBECTL, {"PATH": str(on_path.parent)}, cache, python_bin)
    without_venv = find(KUBECTL, {"PATH": str(on_path.parent)}, cache, tmp_path / "no-venv")

    assert with_venv is not None and with_venv.path == venv_kubectl
    assert without_venv is not None and without_venv.path == on_path
    assert without_venv.source == "PATH"


def test_find_never_builds_and_says_how_to_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    with pytest.raises(binaries.BinaryNotFoundError, match="make controlplane"):
        binaries.find({"PATH": ""}, PINNED)
