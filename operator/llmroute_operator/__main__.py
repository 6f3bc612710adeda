"""``llmroute-operator`` console entry point.

The reconcilers, config server and webhooks arrive with the operator issue (#6); until then this
command says so plainly instead of pretending to run.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``llmroute-operator``."""
    del argv
    print("llmroute-operator: not implemented yet (tracked in issue #6)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
