"""Writing the OpenAI ``chat.completion.chunk`` stream of a translated provider stream.

Translating decoders (``anthropic.py``, ``cohere.py``) learn the stream's id and model from the
provider's opening event and then emit deltas. :class:`ChunkWriter` keeps id, model and ``created``
the same on every chunk and puts OpenAI's opening ``{"role": "assistant", "content": ""}`` chunk
before the first delta. It is written lazily, on the first real output, so that a provider error
arriving right after its opening events still happens before the first chunk, where the attempt
loop may fail over.
"""

from __future__ import annotations

import time
from typing import Any

from .common import chunk

__all__ = ["ChunkWriter"]

Json = dict[str, Any]


class ChunkWriter:
    """The chunks of one stream; ``id`` and ``model`` may be updated until the first is written."""

    def __init__(self, *, id: str, model: str) -> None:
        self.id = id
        self.model = model
        self.created = int(time.time())
        self._started = False

    def delta(self, out: list[Json], delta: Json, finish_reason: str | None = None) -> None:
        """Append a chunk with ``delta`` (preceded by the role chunk if it is the first)."""
        if not self._started:
            self._started = True
            opening = {"role": "assistant", "content": ""}
            out.append(chunk(id=self.id, model=self.model, created=self.created, delta=opening))
        out.append(
            chunk(
                id=self.id, model=self.model, created=self.created, delta=delta, finish_reason=finish_reason
            )
        )

    def usage(self, out: list[Json], usage: Json) -> None:
        """Append the usage-only chunk (no choices) that ends a stream with ``include_usage``."""
        out.append(chunk(id=self.id, model=self.model, created=self.created, usage_=usage))
