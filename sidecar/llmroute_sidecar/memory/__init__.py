"""Conversation memory (``spec.memory``): the history of conversations named by
``x-llmroute-conversation``, kept in the shared Redis and added to each new turn.

``conversation.py`` (pure: rebuild, cut, summary prompts), ``store.py`` (Redis), ``policy.py`` (the
request-path glue ``service.py`` calls). docs/memory.md tells users how it behaves.
"""

from .policy import ConversationMemory, MemoryTurn
from .store import MemoryStore

__all__ = ["ConversationMemory", "MemoryStore", "MemoryTurn"]
