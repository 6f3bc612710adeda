"""Deterministic embedding vectors for the fakes' embedding endpoints.

Used by the OpenAI/Azure, Gemini and Cohere modules. The vectors come from feature hashing of the
text's words, normalised to unit length: the same text always gives the same vector, and texts that
share most words get a high cosine similarity. That is what the sidecar's semantic cache needs from a
stand-in embedding model; random-per-text vectors would make every paraphrase a miss.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Sequence

__all__ = ["embed", "to_base64_f32", "to_binary", "to_int8", "to_uint8"]

_WORD = re.compile(r"\w+")


#: The largest vector the fakes make; real providers cap it too (OpenAI's and Gemini's largest
#: models: 3,072). A larger request is refused with the provider's 400, never allocated.
MAX_DIMENSIONS = 4096


def embed(text: str, dimensions: int) -> list[float]:
    """A unit vector of ``dimensions`` floats for ``text``."""
    if dimensions <= 0:
        raise ValueError("dimensions must be positive")
    vector = [0.0] * dimensions
    # A constant feature keeps the empty text's vector defined and non-zero.
    for token in ["\x00", *_WORD.findall(text.lower())]:
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dimensions
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[slot] += sign
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # the signed words cancelled out (likely in a small vector): still a unit vector
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def to_base64_f32(vector: Sequence[float]) -> str:
    """OpenAI's and Cohere's ``base64`` encoding: little-endian float32s."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def to_int8(vector: Sequence[float]) -> list[int]:
    return [max(-128, min(127, round(v * 127))) for v in vector]


def to_uint8(vector: Sequence[float]) -> list[int]:
    return [max(0, min(255, round((v + 1.0) * 127.5))) for v in vector]


def to_binary(vector: Sequence[float], *, signed: bool) -> list[int]:
    """Cohere's packed sign bits, eight dimensions a byte (``binary`` as int8, ``ubinary`` as uint8)."""
    packed: list[int] = []
    for start in range(0, len(vector), 8):
        byte = 0
        for offset, value in enumerate(vector[start : start + 8]):
            if value > 0:
                byte |= 0x80 >> offset
        packed.append(byte - 128 if signed else byte)
    return packed
