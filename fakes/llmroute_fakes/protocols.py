"""The protocol names ``--protocol`` accepts, and the classes that implement them.

Neighbours: ``server`` and ``__main__`` look names up here; each value is one protocol module's class.
"""

from __future__ import annotations

from types import MappingProxyType

from .anthropic_api import AnthropicProtocol
from .azure_api import AzureOpenAIProtocol
from .bedrock_api import BedrockProtocol
from .cohere_api import CohereProtocol
from .gemini_api import GeminiProtocol
from .openai_api import OpenAICompatibleProtocol, OpenAIProtocol
from .protocol import ProviderProtocol

__all__ = ["PROTOCOLS", "make_protocol"]

PROTOCOLS: MappingProxyType[str, type[ProviderProtocol]] = MappingProxyType(
    {
        "openai": OpenAIProtocol,
        "azure-openai": AzureOpenAIProtocol,
        "anthropic": AnthropicProtocol,
        "google": GeminiProtocol,
        "bedrock": BedrockProtocol,
        "cohere": CohereProtocol,
        "openai-compatible": OpenAICompatibleProtocol,
    }
)


def make_protocol(name: str) -> ProviderProtocol:
    try:
        return PROTOCOLS[name]()
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}") from None
