"""``llmroute-sidecar`` console entry point.

The HTTP/gRPC fronts and provider adapters arrive with the sidecar issue (#4); until then this command
says so plainly instead of pretending to run.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``llmroute-sidecar``."""
    del argv
    print("llmroute-sidecar: not implemented yet (tracked in issue #4)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
