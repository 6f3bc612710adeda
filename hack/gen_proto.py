"""Generate the Python code of the protobuf contract, or check that the committed code is fresh.

    python hack/gen_proto.py            # regenerate proto/llmroute_proto/v1/*_pb2*.py[i] (`make proto`)
    python hack/gen_proto.py --check    # exit 1 if a committed file is stale (`make check-generated`)

Every ``proto/llmroute_proto/v1/*.proto`` is compiled with ``-I proto``, so the proto path equals the
Python import path and the generated imports (``from llmroute_proto.v1 import config_pb2``) work
unpatched. ``grpc_tools.protoc`` writes ``*_pb2.py`` and ``*_pb2_grpc.py``; mypy-protobuf's plugins
write ``*_pb2.pyi`` and ``*_pb2_grpc.pyi``.

Both modes generate into a temporary directory first. Writing then copies only what differs (and
deletes generated files whose ``.proto`` is gone); checking compares byte for byte, so the check sees
exactly what a regeneration would write. The output is deterministic for a given toolchain, but it
does depend on the grpcio-tools and mypy-protobuf versions, which are printed with every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROTO_ROOT = REPO_ROOT / "proto"
# The proto package, relative to the proto root; also the Python package of the generated code.
PACKAGE_DIR = Path("llmroute_proto") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
TOOLS = ("grpcio-tools", "mypy-protobuf", "protobuf")


@dataclasses.dataclass(frozen=True)
class Drift:
    """How the committed generated files differ from a fresh generation (names relative to the package)."""

    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.unexpected)


def is_generated(name: str) -> bool:
    """Whether a file name is one this script writes."""
    return name.endswith(GENERATED_SUFFIXES)


def proto_sources(proto_root: Path) -> list[str]:
    """The .proto files of the package, as protoc paths relative to the proto root, sorted."""
    return sorted((PACKAGE_DIR / path.name).as_posix() for path in (proto_root / PACKAGE_DIR).glob("*.proto"))


def toolchain() -> str:
    """The versions the output depends on, for messages."""
    versions = []
    for tool in TOOLS:
        try:
            versions.append(f"{tool} {importlib.metadata.version(tool)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{tool} (not installed)")
    return ", ".join(versions)


def find_plugin(name: str) -> str:
    """A protoc plugin installed beside this interpreter (the venv), else on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        raise SystemExit(f"error: {name} not found; it comes with mypy-protobuf (make venv)")
    return found


def generate(proto_root: Path, out_dir: Path) -> None:
    """Compile every .proto of the package under proto_root into out_dir (which mirrors proto_root)."""
    sources = proto_sources(proto_root)
    if not sources:
        raise SystemExit(f"error: no .proto files in {proto_root / PACKAGE_DIR}")
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",  # as __main__ it adds the well-known types (google/protobuf/*.proto) to -I
        "-I.",
        f"--plugin=protoc-gen-mypy={find_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={find_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    print(f"==> protoc ({toolchain()})")
    print(f"    -I {proto_root}: {' '.join(Path(source).name for source in sources)}")
    result = subprocess.run(command, cwd=proto_root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"error: protoc failed with exit code {result.returncode}")
    # mypy-protobuf reports each file it writes; anything else (protoc warnings, such as an unused
    # import) is worth showing.
    warnings = [
        line for line in result.stderr.splitlines() if line and not line.startswith("Writing mypy to ")
    ]
    for line in warnings:
        print(line, file=sys.stderr)


def read_generated(package_dir: Path) -> dict[str, bytes]:
    """The generated files in a package directory, by file name."""
    if not package_dir.is_dir():
        return {}
    return {
        path.name: path.read_bytes()
        for path in sorted(package_dir.iterdir())
        if path.is_file() and is_generated(path.name)
    }


def compare(fresh: dict[str, bytes], committed: dict[str, bytes]) -> Drift:
    """What writing `fresh` over `committed` would change."""
    return Drift(
        changed=tuple(
            sorted(name for name in fresh.keys() & committed.keys() if fresh[name] != committed[name])
        ),
        missing=tuple(sorted(fresh.keys() - committed.keys())),
        unexpected=tuple(sorted(committed.keys() - fresh.keys())),
    )


def write(fresh: dict[str, bytes], drift: Drift, package_dir: Path) -> None:
    """Apply the drift: write changed and missing files, delete orphans."""
    for name in (*drift.changed, *drift.missing):
        (package_dir / name).write_bytes(fresh[name])
        print(f"    wrote   {name}")
    for name in drift.unexpected:
        (package_dir / name).unlink()
        print(f"    removed {name} (its .proto is gone)")


def report_stale(drift: Drift, package_dir: Path) -> None:
    print(f"error: generated code in {package_dir} is stale:", file=sys.stderr)
    for label, names in (
        ("differs", drift.changed),
        ("missing", drift.missing),
        ("orphaned", drift.unexpected),
    ):
        for name in names:
            print(f"    {label:<8} {package_dir / name}", file=sys.stderr)
    print("hint: run `make proto` and commit the result", file=sys.stderr)
    print(
        f"      (if nothing else changed, compare your toolchain: {toolchain()})",
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if committed files are stale"
    )
    parser.add_argument(
        "--proto-root",
        type=Path,
        default=DEFAULT_PROTO_ROOT,
        help="directory holding llmroute_proto/v1/*.proto (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    proto_root: Path = args.proto_root.resolve()
    package_dir = proto_root / PACKAGE_DIR

    with tempfile.TemporaryDirectory(prefix="llmroute-proto-") as tmp:
        generate(proto_root, Path(tmp))
        fresh = read_generated(Path(tmp) / PACKAGE_DIR)
    drift = compare(fresh, read_generated(package_dir))

    if args.check:
        if drift:
            report_stale(drift, package_dir)
            return 1
        print(f"    {len(fresh)} generated files are fresh")
        return 0
    write(fresh, drift, package_dir)
    print(f"    {len(fresh)} generated files, {len(drift.changed) + len(drift.missing)} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
