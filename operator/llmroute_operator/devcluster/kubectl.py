"""Run kubectl against one kubeconfig: the helper that e2e tests and the demo use.

:mod:`.binaries` finds the kubectl executable; :mod:`.target` hands a :class:`Kubectl` to the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class KubectlError(RuntimeError):
    """kubectl exited non-zero; ``stderr`` says why."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(args)} exited {returncode}: {stderr.strip() or stdout.strip()}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True)
class Kubectl:
    executable: Path
    kubeconfig: Path

    def run(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl --kubeconfig=K ARGS``; raises :class:`KubectlError` on failure when ``check``."""
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        result = subprocess.run(
            [str(self.executable), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(args, result.returncode, result.stdout, result.stderr)
        return result

    def json(self, *args: str, input: str | None = None, timeout: float = 60.0) -> Any:
        """Run with ``-o json`` and parse the output."""
        return json.loads(self.run(*args, "-o", "json", input=input, timeout=timeout).stdout)

    def create(self, manifest: dict[str, Any], *, namespace: str | None = None) -> Any:
        """``kubectl create -f -`` of one object; returns the object the server answered with."""
        extra = ["-n", namespace] if namespace else []
        return self.json("create", *extra, "-f", "-", input=json.dumps(manifest))

    def apply_crds(self, folder: Path, *, timeout: float = 60.0) -> None:
        """``kubectl apply --server-side`` of the CRDs in ``folder``, then :meth:`wait_established`."""
        applied = self.run("apply", "--server-side", "--force-conflicts", "-o", "name", "-f", str(folder))
        self.wait_established([line.strip() for line in applied.stdout.splitlines() if line.strip()], timeout)

    def wait_established(self, names: Sequence[str], timeout: float = 60.0) -> None:
        """Wait until each CRD (``customresourcedefinition.apiextensions.k8s.io/NAME``) is Established.

        Polled rather than ``kubectl wait --for=condition=Established``: that command fails at once
        ("accessor error: <nil>") when it reads a CRD before the API server wrote its first conditions.
        """
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                conditions = (self.json("get", name).get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise KubectlError(("wait", "Established", name), 1, "", f"{name} is not Established")
                time.sleep(0.1)
