"""The standalone compile, run in a child process so the sidecar never holds the compiler.

``StandaloneSource`` (``standalone.py``) starts ``python -m llmroute_sidecar.config.compile_child PATH``
for every (re)load: this process imports the YAML loader and the compiler (pydantic, PyYAML: about
11 MB that would otherwise stay in the sidecar for its whole life), compiles, writes the serialized
``RouterConfig`` to stdout and exits. A refusal is one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: The exit status of a config the loader or the compiler refused (the message is on stderr).
REFUSED = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmroute_sidecar.config.compile_child")
    parser.add_argument("path", type=Path)
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--region", default="")
    args = parser.parse_args(argv)
    from llmroute_proto.api.loader import ResourceError

    from .standalone import compile_path
    from .store import ConfigError

    try:
        config = compile_path(args.path, namespace=args.namespace, region=args.region)
    except (ConfigError, ResourceError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return REFUSED
    sys.stdout.buffer.write(config.SerializeToString())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
