"""Fixtures of the e2e tier: a real kube-apiserver (local, or an existing cluster) and fresh namespaces.

The logic lives in :mod:`llmroute_operator.devcluster.target` (shared with ``make demo``); this file
maps it onto pytest. ``LLMROUTE_E2E=require`` turns "no cluster" into a failure (CI); otherwise a
missing binary skips the tier with the reason. When a test fails, the logs of etcd and kube-apiserver
are copied to ``_artifacts/e2e/<test>/``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl

ARTIFACTS = Path(__file__).resolve().parents[2] / "_artifacts" / "e2e"
_E2E_DIR = Path(__file__).resolve().parent
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_CLUSTER = pytest.StashKey[target.Cluster]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    cluster = terminalreporter.config.stash.get(_CLUSTER, None)
    if cluster is None:
        return
    line = f"llmroute e2e: {cluster.description}"
    if cluster.plane is not None and cluster.plane.startup_seconds is not None:
        line += f", ready in {cluster.plane.startup_seconds:.1f}s"
    terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[target.Cluster]:
    """The cluster under test: ``.kubeconfig``, ``.run(...)`` / ``.json(...)`` for kubectl, ``.plane``."""
    try:
        mode = target.mode_from_env()
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)
    if mode is target.Mode.SKIP:
        pytest.skip(f"{target.MODE_VAR}=skip")
    stack = contextlib.ExitStack()
    try:
        found = stack.enter_context(target.open_cluster(failure_artifacts=ARTIFACTS / "startup"))
    except target.ClusterUnavailableError as exc:
        if mode is target.Mode.REQUIRE:
            pytest.fail(f"{target.MODE_VAR}=require, but no cluster is available: {exc}", pytrace=False)
        pytest.skip(f"no cluster for e2e tests: {exc} (set {target.MODE_VAR}=require to fail instead)")
    with stack:
        request.config.stash[_CLUSTER] = found
        yield found


@pytest.fixture(scope="session")
def kubectl(cluster: target.Cluster) -> Kubectl:
    """kubectl bound to the cluster under test (``.run``, ``.json``, ``.create``)."""
    return cluster.kubectl


@pytest.fixture
def namespace(cluster: target.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (it has no default ServiceAccount: no controller-manager runs)."""
    name = cluster.create_namespace(f"e2e-{request.node.name}")
    yield name
    cluster.delete_namespace(name)


@pytest.fixture(autouse=True)
def _keep_logs_of_failures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reports = request.node.stash.get(_REPORTS, {})
    if not any(report.failed for report in reports.values()):
        return
    cluster = request.config.stash.get(_CLUSTER, None)
    if cluster is not None and cluster.plane is not None:
        cluster.plane.copy_logs(ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid))
