"""What a request needs from a backend (chat or embeddings, tools, JSON mode, vision).

A backend that lacks one of them is never a candidate for the request: sending it would only earn a
provider 400. Neighbours: ``planner.py`` filters with :func:`supports`; the capabilities themselves
come from ``Backend.capabilities`` in the config (``config/snapshot.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ..config.snapshot import BackendEntry

__all__ = ["Kind", "needs", "supports"]

Kind = Literal["chat", "embeddings"]


def needs(body: Mapping[str, Any], kind: Kind, *, images: int = 0) -> tuple[str, ...]:
    """The capability names (fields of ``pb.Capabilities``) this request needs.

    ``images`` is the number of image parts in the messages (``tokens.Estimate.images`` counts them
    in the pass it makes anyway).
    """
    if kind == "embeddings":
        return ("embeddings",)
    wanted = ["chat"]
    if body.get("tools") or body.get("functions"):
        wanted.append("tools")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        wanted.append("json_mode")
    if images:
        wanted.append("vision")
    return tuple(wanted)


def supports(backend: BackendEntry, wanted: tuple[str, ...]) -> bool:
    caps = backend.capabilities
    if len(wanted) == 1:  # the common case ("chat",), without a generator
        return bool(getattr(caps, wanted[0]))
    return all(getattr(caps, name) for name in wanted)
