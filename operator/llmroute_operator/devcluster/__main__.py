"""``python -m llmroute_operator.devcluster up|down|status``: the long-lived local plane.

``make cluster-up`` / ``make cluster-down`` call this; the work is done by :mod:`.background`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from llmroute_operator.devcluster import background, binaries, gobuild, paths, versions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmroute_operator.devcluster",
        description="A long-lived local etcd + kube-apiserver for development.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the plane keeps its state and logs (default: $LLMROUTE_CLUSTER_DIR or ~/.cache/llmroute/cluster)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", help="start the plane (building binaries if needed) and print `export KUBECONFIG=...`"
    )
    sub.add_parser("down", help="stop the plane started by `up`")
    sub.add_parser("status", help="say whether the plane runs and answers /readyz")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or paths.cluster_state_dir()
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        if args.command == "up":
            return background.up(state_dir)
        if args.command == "down":
            return background.down(state_dir)
        return background.status(state_dir)
    except (
        binaries.BinaryNotFoundError,
        gobuild.BuildError,
        versions.VersionsError,
        paths.RepoNotFoundError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
