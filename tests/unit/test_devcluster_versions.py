"""versions.env parsing, and the Go wrapper modules agreeing with it (llmroute_operator.devcluster)."""

from __future__ import annotations

import pytest

from llmroute_operator.devcluster import gobuild, paths, target, versions


def test_parse_env_reads_shell_style_lines() -> None:
    text = "# comment\n\nA=1\nexport B='two'\nC=\"three\"  \n"

    assert versions.parse_env(text) == {"A": "1", "B": "two", "C": "three"}


def test_parse_env_rejects_other_lines() -> None:
    with pytest.raises(versions.VersionsError, match="line 2"):
        versions.parse_env("A=1\nnot a pair\n")


def test_repository_pins_are_complete_and_well_formed() -> None:
    pinned = versions.load()

    assert pinned.kubernetes.startswith("v1.")
    assert pinned.kubernetes_staging == f"v0.{pinned.kubernetes_minor}.{pinned.kubernetes.rsplit('.', 1)[1]}"


def test_wrapper_modules_build_the_pinned_versions() -> None:
    gobuild.check_wrappers(versions.load())


def test_wrapper_replaces_every_staging_module() -> None:
    replaced = gobuild.replaced_versions(paths.hack_dir() / "kube-apiserver" / "go.mod")

    assert {"k8s.io/api", "k8s.io/client-go", "k8s.io/apiserver", "k8s.io/kubectl"} <= replaced.keys()
    assert len(replaced) >= 30


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("", target.Mode.AUTO),
        ("require", target.Mode.REQUIRE),
        ("REQUIRE", target.Mode.REQUIRE),
        ("0", target.Mode.SKIP),
    ],
)
def test_e2e_mode_from_env(value: str, mode: target.Mode) -> None:
    assert target.mode_from_env({"LLMROUTE_E2E": value}) is mode


def test_unknown_e2e_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="LLMROUTE_E2E"):
        target.mode_from_env({"LLMROUTE_E2E": "maybe"})


def test_namespace_names_are_unique_dns_labels() -> None:
    names = {target.namespace_name("e2e-test_Something[param/x]" * 5) for _ in range(20)}

    assert len(names) == 20
    for name in names:
        assert len(name) <= 63
        assert name.replace("-", "").isalnum() and name == name.lower()
        assert not name.startswith("-") and not name.endswith("-")
