"""``llmroute-operator``: the kopf control plane (see ``app.py`` for what runs, ``settings.py`` for flags)."""

from __future__ import annotations

import asyncio
import logging
import sys

from .app import run
from .settings import build_parser, settings_from_args

__all__ = ["main"]


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kopf and aiohttp are chatty at INFO about every watch and request.
    for noisy in ("kopf.objects", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``llmroute-operator``."""
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    _configure_logging(args.log_level)
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works too
        asyncio.run(run(settings))
    else:
        uvloop.run(run(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
