"""PII detection and redaction for prompts before they leave the pod (``privacy.pii`` on a route).

``detect`` finds values (regex candidates confirmed by the checks in ``checks``), ``chat`` walks
the prompt texts of a chat-completions body, ``redact`` swaps values for numbered placeholders and
returns a :class:`Redaction`, and ``restore`` puts values back into responses and streams. The
request path (``service.py``) calls only what is re-exported here. See ``docs/pii.md``.
"""

from __future__ import annotations

from .chat import scan_chat
from .detect import PII_TYPES, PiiMatch, find_pii
from .redact import Redaction, redact_chat, redact_texts
from .restore import ChunkRestorer

__all__ = [
    "PII_TYPES",
    "ChunkRestorer",
    "PiiMatch",
    "Redaction",
    "find_pii",
    "redact_chat",
    "redact_texts",
    "scan_chat",
]
