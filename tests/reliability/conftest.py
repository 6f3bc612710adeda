"""Fixtures of the reliability tier: the e2e tier's real kube-apiserver + etcd and its failure logs.

The fault scenarios here run against the same local control plane as ``tests/e2e`` (``cluster``;
``LLMROUTE_E2E=require`` in CI turns a missing one into a failure), so the fixtures are the e2e
tier's own, imported rather than copied.
"""

from __future__ import annotations

from tests.e2e.conftest import (  # noqa: F401 - fixtures and hooks pytest finds by name
    _keep_logs_of_failures,
    cluster,
    kubectl,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)
