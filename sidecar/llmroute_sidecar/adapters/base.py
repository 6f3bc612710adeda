"""The contract every provider adapter implements: OpenAI shape in, provider wire out, and back.

The sidecar's canonical request is the OpenAI chat-completions (or embeddings) JSON the app sent,
parsed into a dict. An adapter builds the upstream HTTP request for one backend (URL, auth headers,
body), parses a non-streaming answer into an OpenAI ``chat.completion`` dict, and decodes a streaming
body incrementally into OpenAI ``chat.completion.chunk`` dicts. It never does I/O itself: the attempt
loop (``llmroute_sidecar.attempts``) sends what the adapter builds, which keeps adapters pure and
unit-testable. ``registry.py`` maps provider names to adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["AwsKeys", "ChatStreamDecoder", "ProviderAdapter", "Target", "UpstreamRequest"]

Json = dict[str, Any]


@dataclass(frozen=True)
class AwsKeys:
    """AWS credentials for SigV4 (Bedrock)."""

    access_key_id: str
    secret_access_key: str
    session_token: str = ""

    def __repr__(self) -> str:  # never print secrets
        return "AwsKeys(<redacted>)"


@dataclass(frozen=True)
class Target:
    """Everything an adapter needs to know about one backend, resolved from the RouterConfig."""

    provider: str  # "openai", "azure-openai", "anthropic", "google", "bedrock", "cohere", "openai-compatible"
    model: str  # the provider's model id (Azure: used when no deployment is set)
    endpoint: str  # base URL as the provider's SDK takes it; "" = the provider's public default
    region: str = ""
    api_key: str = field(default="", repr=False)
    aws: AwsKeys | None = field(default=None, repr=False)
    azure_api_version: str = "2024-10-21"
    azure_deployment: str = ""


@dataclass(frozen=True)
class UpstreamRequest:
    """One HTTP request to a provider, ready to send."""

    method: str
    url: str  # sent as is: already percent-encoded, never re-quoted by the HTTP client
    headers: Mapping[str, str]
    body: bytes


class ChatStreamDecoder(Protocol):
    """Turns a provider's streaming body into OpenAI chunks, one network read at a time."""

    def feed(self, data: bytes) -> list[Json]:
        """Decode ``data`` (any split of the byte stream) into zero or more OpenAI chunk dicts.

        Raises :class:`~llmroute_sidecar.adapters.errors.ProviderError` when the provider sends an
        error event mid-stream.
        """
        ...

    @property
    def finished(self) -> bool:
        """Whether the provider's terminal event arrived (a body ending before it was cut)."""
        ...

    @property
    def usage(self) -> Json | None:
        """Token usage as OpenAI reports it (prompt_tokens, completion_tokens, total_tokens), once known."""
        ...


class ProviderAdapter(Protocol):
    """The translation for one provider protocol."""

    name: str

    def chat_request(self, target: Target, body: Json, *, stream: bool) -> UpstreamRequest:
        """The upstream request for an OpenAI chat-completions ``body`` (``model`` is replaced)."""
        ...

    def parse_chat(self, body: bytes, *, model: str) -> Json:
        """A successful (2xx) non-streaming answer as an OpenAI ``chat.completion`` dict."""
        ...

    def chat_stream_decoder(self, *, model: str, include_usage: bool) -> ChatStreamDecoder:
        """A fresh decoder for one streaming answer."""
        ...

    def embeddings_request(self, target: Target, body: Json) -> UpstreamRequest:
        """The upstream request for an OpenAI embeddings ``body``; raises ProviderError if unsupported."""
        ...

    def parse_embeddings(self, body: bytes, *, model: str) -> Json:
        """A successful embeddings answer as an OpenAI ``list`` of ``embedding`` objects."""
        ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> Exception:
        """The :class:`ProviderError` for a non-2xx answer (parsing the provider's error body)."""
        ...
