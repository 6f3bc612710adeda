"""Packaging contract: one distribution, three extras, and a sidecar that stays lean.

``llmroute[sidecar]`` must not pull kopf or the Kubernetes client, neither through its declared
dependencies (walked transitively through the installed distributions' metadata) nor at import time.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_SIDECAR = {"kopf", "kubernetes", "kubernetes-asyncio"}


def _closure(requirements: list[Requirement], extras: set[str]) -> set[str]:
    """Names of every distribution that installing ``requirements`` brings in."""
    seen: set[str] = set()
    queue = [(r, extras) for r in requirements]
    while queue:
        req, active = queue.pop()
        env_extras = active or {""}
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in env_extras):
            continue
        name = canonicalize_name(req.name)
        if name == "llmroute":
            # A self-reference such as llmroute[sidecar,operator]: follow it through our own metadata.
            queue += [(r, set(req.extras)) for r in _requirements_of_project()]
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist_requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        queue += [(Requirement(r), set(req.extras)) for r in dist_requires]
    return {k.split("[")[0] for k in seen}


def _requirements_of_project() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra, items in project["optional-dependencies"].items():
        reqs += [Requirement(f"{r}; extra == '{extra}'") if ";" not in r else Requirement(r) for r in items]
    return reqs


def _extra_requirements(extra: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"][extra]]


def test_distribution_and_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "llmroute"
    assert {"operator", "sidecar", "dev"} <= project["optional-dependencies"].keys()
    scripts = project["scripts"]
    assert scripts["llmroute-operator"].startswith("llmroute_operator")
    assert scripts["llmroute-sidecar"].startswith("llmroute_sidecar")


def test_sidecar_extra_does_not_pull_kopf_or_kubernetes() -> None:
    closure = _closure(_extra_requirements("sidecar"), set())
    assert "httptools" in closure and "grpcio" in closure, "the walk must see the sidecar's real dependencies"
    assert not closure & FORBIDDEN_IN_SIDECAR, f"llmroute[sidecar] pulls {closure & FORBIDDEN_IN_SIDECAR}"


def test_operator_extra_does_pull_kopf() -> None:
    """The walk is not blind: it finds kopf where it belongs."""
    assert "kopf" in _closure(_extra_requirements("operator"), set())


def test_sidecar_import_loads_no_operator_code() -> None:
    code = (
        "import sys, llmroute_sidecar, llmroute_sidecar.__main__, llmroute_proto.api, llmroute_proto.api.loader\n"
        "import llmroute_sidecar.operator_client, llmroute_sidecar.usage_reporter, llmroute_sidecar.runtime\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'kopf', 'kubernetes', 'kubernetes_asyncio', 'llmroute_operator'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the sidecar imports {out.stdout.strip()}"


def test_a_sidecar_without_an_otlp_endpoint_loads_no_opentelemetry() -> None:
    code = (
        "import sys, asyncio, tempfile, pathlib\n"
        "from llmroute_sidecar.runtime import Settings, Sidecar\n"
        "sidecar = Sidecar(Settings(config_path=pathlib.Path('unused.yaml')))\n"
        "assert not sidecar.service.tracing.enabled\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"a sidecar with tracing off imports {out.stdout.strip()}"


def test_console_scripts_are_installed() -> None:
    names = {ep.name for ep in md.entry_points(group="console_scripts") if ep.value.startswith("llmroute_")}
    assert {"llmroute-operator", "llmroute-sidecar"} <= names


def test_the_fake_providers_are_not_part_of_the_sidecar_package() -> None:
    import importlib.util

    assert importlib.util.find_spec("llmroute_sidecar.fake_providers") is None
    assert importlib.util.find_spec("llmroute_fakes") is not None


def test_a_running_sidecar_never_holds_the_yaml_loader_or_the_compiler() -> None:
    """Standalone mode compiles in a child process (``config/compile_child.py``): the ~11 MB of
    pydantic, PyYAML and the compiler stay out of the long-lived process, in both modes."""
    code = (
        "import sys, llmroute_sidecar.__main__, llmroute_sidecar.runtime, llmroute_sidecar.config.standalone\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'pydantic', 'yaml'}"
        " or m.startswith(('llmroute_proto.api', 'llmroute_proto.compiler')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the sidecar imports {out.stdout.strip()}"


_RUNNING_SIDECAR = """
import asyncio, pathlib, sys, urllib.request
from llmroute_sidecar.runtime import Settings, Sidecar

async def main():
    sidecar = Sidecar(Settings(config_path=pathlib.Path(sys.argv[1]), http_addr="127.0.0.1:0",
                               admin_addr="127.0.0.1:0", grpc_addr="127.0.0.1:0", watch_seconds=0,
                               upstream_client=sys.argv[2]))
    await sidecar.start()
    try:
        # Served, not only started: a request on each HTTP server, in a thread (urllib blocks).
        for url in (f"http://127.0.0.1:{sidecar.http_port}/v1/models",
                    f"http://127.0.0.1:{sidecar.admin_port}/metrics"):
            status = await asyncio.to_thread(lambda u=url: urllib.request.urlopen(u, timeout=10).status)
            assert status == 200, (url, status)
        # The operator-fed mode's modules too (they need an operator to start, not to load).
        import llmroute_sidecar.operator_client, llmroute_sidecar.budget.lease_client  # noqa
    finally:
        await sidecar.stop(grace=0.5)
    print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in FAMILY)))

FAMILY = {"aiohttp", "yarl", "multidict", "aiosignal", "frozenlist", "propcache", "aiohappyeyeballs"}
asyncio.run(main())
"""

_ROUTE = """\
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {name: chat, namespace: demo}
spec:
  models: [{name: chat, backends: [local]}]
  backends:
  - {name: local, provider: openai-compatible, model: m, endpoint: "http://127.0.0.1:9/v1"}
"""


def _modules_of_a_running_sidecar(tmp_path: Path, upstream_client: str) -> set[str]:
    route = tmp_path / "route.yaml"
    route.write_text(_ROUTE)
    out = subprocess.run(
        [sys.executable, "-c", _RUNNING_SIDECAR, str(route), upstream_client],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {m for m in out.stdout.strip().split(",") if m}


def test_a_running_sidecar_never_imports_aiohttp(tmp_path: Path) -> None:
    """Its HTTP servers are our own (``web/``, on httptools) and the default upstream client is the
    httptools pool: aiohttp and its family (~16 MB of RSS) stay out of the process."""
    loaded = _modules_of_a_running_sidecar(tmp_path, "httptools")
    assert not loaded, f"a running sidecar imports {sorted(loaded)}"


def test_aiohttp_is_imported_only_when_its_upstream_client_is_chosen(tmp_path: Path) -> None:
    """``--upstream-client aiohttp`` still works, and is the one way aiohttp gets in."""
    assert "aiohttp" in _modules_of_a_running_sidecar(tmp_path, "aiohttp")
