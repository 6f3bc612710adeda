"""Write the admin kubeconfig of a local control plane.

Credentials come from :mod:`.pki` and are embedded (``*-data``), so the file stands alone and can be
copied elsewhere; :mod:`.controlplane` writes it, :mod:`.kubectl` and the tests use it.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from llmroute_operator.devcluster.pki import Pki

CONTEXT = "llmroute-dev"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def render(server: str, pki: Pki, *, name: str = CONTEXT, namespace: str = "default") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_cert)}}
        ],
        "users": [
            {
                "name": f"{name}-admin",
                "user": {
                    "client-certificate-data": _b64(pki.admin_cert),
                    "client-key-data": _b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": name, "user": f"{name}-admin", "namespace": namespace},
            }
        ],
        "current-context": name,
        "preferences": {},
    }


def write(path: Path, server: str, pki: Pki, *, name: str = CONTEXT) -> Path:
    """Write a kubeconfig (mode 0600: it holds the admin key) whose current context is ``name``."""
    text = yaml.safe_dump(render(server, pki, name=name), sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path
