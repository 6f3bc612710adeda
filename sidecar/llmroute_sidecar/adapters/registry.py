"""Which adapter speaks which provider protocol.

Adapters are stateless, so one instance per protocol serves every backend. Modules are imported on
first use: a sidecar whose routes only use OpenAI never loads the Bedrock signer.
"""

from __future__ import annotations

import importlib
from functools import cache

from .base import ProviderAdapter

__all__ = ["PROVIDERS", "adapter_for"]

# provider name -> (module in this package, class name)
PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("openai", "OpenAIAdapter"),
    "openai-compatible": ("openai", "OpenAIAdapter"),
    "azure-openai": ("openai", "AzureOpenAIAdapter"),
    "anthropic": ("anthropic", "AnthropicAdapter"),
    "google": ("google", "GoogleAdapter"),
    "bedrock": ("bedrock", "BedrockAdapter"),
    "cohere": ("cohere", "CohereAdapter"),
}


@cache
def adapter_for(provider: str) -> ProviderAdapter:
    """The adapter for ``provider``; raises KeyError for an unknown one."""
    module_name, class_name = PROVIDERS[provider]
    module = importlib.import_module(f"{__package__}.{module_name}")
    adapter: ProviderAdapter = getattr(module, class_name)()
    if provider == "openai-compatible":
        adapter.name = "openai-compatible"
    return adapter
