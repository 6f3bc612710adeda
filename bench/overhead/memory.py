"""What the sidecar's idle RSS is made of: the RSS of fresh interpreters importing it step by step.

Each step runs in its own ``python -c`` (so nothing is shared or cached between steps) and reports
VmRSS after its imports; the single-package rows show what one dependency costs on its own on top
of Python + uvloop. This is import-time memory only: the running sidecar adds its config, pools and
buffers on top (the bench's ``idle_start`` reading).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

__all__ = ["import_rss"]

_STEPS = [
    ("python + uvloop", "import uvloop"),
    ("+ aiohttp (server and client)", "import uvloop, aiohttp, aiohttp.web"),
    ("+ sidecar runtime (standalone config, adapters, metrics)", "import uvloop, llmroute_sidecar.runtime"),
    ("+ gRPC front", "import uvloop, llmroute_sidecar.runtime, llmroute_sidecar.grpc_front"),
]
_ALONE = [
    "pydantic",
    "grpc",
    "google.protobuf",
    "llmroute_proto.v1.config_pb2",
    "prometheus_client",
    "yaml",
    "httpx",
]
_PROBE = (
    "import sys\n{imports}\n"
    "rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0].split()[1]\n"
    "heavy = [m for m in ('pydantic', 'grpc', 'yaml', 'prometheus_client', 'httpx') if m in sys.modules]\n"
    "print(int(rss) / 1024, len(sys.modules), ','.join(heavy))\n"
)


def _probe(imports: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(imports=imports)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    rss, modules, heavy = [*done.stdout.split(), ""][:3]
    return {
        "rss_mb": round(float(rss), 1),
        "modules": int(modules),
        "heavy": heavy.split(",") if heavy else [],
    }


def import_rss() -> dict[str, Any]:
    steps = {name: _probe(code) for name, code in _STEPS}
    base = steps["python + uvloop"].get("rss_mb", 0.0)
    alone = {}
    for module in _ALONE:
        row = _probe(f"import uvloop, {module}")
        if "rss_mb" in row:
            row["delta_mb"] = round(row["rss_mb"] - base, 1)
        alone[module] = row
    return {"steps": steps, "alone_over_python_uvloop": alone}
