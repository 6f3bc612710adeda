"""The placeholder format that stands in for a redacted value: ``<EMAIL_1>``, ``<CREDIT_CARD_2>``.

Upper-case type, underscore, a number counted per type and request, in angle brackets: short,
made of tokens every tokenizer keeps whole, and the shape models already copy verbatim from
templates. ``redact.py`` issues them; ``restore.py`` finds them in responses and streams.
"""

from __future__ import annotations

import re

__all__ = ["PLACEHOLDER", "placeholder"]

# Any string of placeholder shape. Only those a Redaction issued are ever replaced, so this may
# match more than we issue; it never spans a "<" or ">", which is what lets a stream be restored
# piecewise (see restore.py).
PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]*_[1-9][0-9]*>", re.ASCII)


def placeholder(kind: str, number: int) -> str:
    """The ``number``-th placeholder of PII type ``kind`` (``"credit_card"`` -> ``<CREDIT_CARD_n>``)."""
    return f"<{kind.upper()}_{number}>"
