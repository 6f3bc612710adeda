"""OpenAI, Azure OpenAI and OpenAI-compatible servers (vLLM, TGI, Ollama): the pass-through adapters.

The app already speaks this protocol, so requests go out nearly as they came in: only ``model`` is
replaced and ``stream_options.include_usage`` is forced on for streams (usage is never dropped, even
when the app did not ask for it; the decoder then hides the usage-only chunk from the app). Azure
differs in URL (deployments, ``api-version``) and auth (``api-key``). Neighbours: ``base.py`` (the
contract), ``sse.py``, ``common.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .base import Target, UpstreamRequest
from .common import encode, loads, retry_after
from .errors import ErrorKind, ProviderError, kind_for_status
from .sse import SseParser

__all__ = ["AzureOpenAIAdapter", "OpenAIAdapter", "OpenAIStreamDecoder"]

Json = dict[str, Any]
DEFAULT_OPENAI = "https://api.openai.com/v1"


class OpenAIStreamDecoder:
    """OpenAI SSE chunks pass through as dicts; ``[DONE]`` marks the end."""

    def __init__(self, *, model: str, include_usage: bool, provider: str) -> None:
        self._sse = SseParser()
        self._model = model
        self._include_usage = include_usage
        self._provider = provider
        self._finished = False
        self._usage: Json | None = None

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def usage(self) -> Json | None:
        return self._usage

    def feed(self, data: bytes) -> list[Json]:
        out: list[Json] = []
        for event in self._sse.feed(data):
            if event.data == "[DONE]":
                self._finished = True
                continue
            if not event.data:
                continue
            parsed = loads(event.data.encode(), self._provider)
            if not isinstance(parsed, dict):
                raise ProviderError(
                    ErrorKind.PROTOCOL, "stream chunk is not an object", provider=self._provider
                )
            if "error" in parsed:
                error = (
                    parsed["error"]
                    if isinstance(parsed["error"], dict)
                    else {"message": str(parsed["error"])}
                )
                message = str(error.get("message", "stream error"))
                raise ProviderError(kind_for_status(500, message), message, provider=self._provider)
            if parsed.get("usage"):
                self._usage = parsed["usage"]
            if not parsed.get("choices") and parsed.get("usage") is not None and not self._include_usage:
                continue  # the usage-only chunk we asked for on the app's behalf
            if not self._include_usage and "usage" in parsed:
                parsed = {k: v for k, v in parsed.items() if k != "usage"}
            out.append(parsed)
        return out


class OpenAIAdapter:
    """api.openai.com and anything that speaks its chat-completions protocol."""

    def __init__(self, name: str = "openai") -> None:
        self.name = name

    def _base(self, target: Target) -> str:
        return (target.endpoint or DEFAULT_OPENAI).rstrip("/")

    def _headers(self, target: Target) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        return headers

    def _chat_url(self, target: Target) -> str:
        return f"{self._base(target)}/chat/completions"

    def _embeddings_url(self, target: Target) -> str:
        return f"{self._base(target)}/embeddings"

    def chat_request(self, target: Target, body: Json, *, stream: bool) -> UpstreamRequest:
        out = dict(body)
        out["model"] = target.model
        if stream:
            out["stream"] = True
            options = dict(out.get("stream_options") or {})
            options["include_usage"] = True
            out["stream_options"] = options
        else:
            out.pop("stream", None)
            out.pop("stream_options", None)
        headers = self._headers(target)
        if stream:
            headers["accept"] = "text/event-stream"
        return UpstreamRequest("POST", self._chat_url(target), headers, encode(out, self.name))

    def parse_chat(self, body: bytes, *, model: str) -> Json:
        parsed = loads(body, self.name)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
            raise ProviderError(ErrorKind.PROTOCOL, "answer has no choices", provider=self.name)
        parsed.setdefault("model", model)
        return parsed

    def chat_stream_decoder(self, *, model: str, include_usage: bool) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(model=model, include_usage=include_usage, provider=self.name)

    def embeddings_request(self, target: Target, body: Json) -> UpstreamRequest:
        out = dict(body)
        out["model"] = target.model
        return UpstreamRequest(
            "POST", self._embeddings_url(target), self._headers(target), encode(out, self.name)
        )

    def parse_embeddings(self, body: bytes, *, model: str) -> Json:
        parsed = loads(body, self.name)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), list):
            raise ProviderError(ErrorKind.PROTOCOL, "embeddings answer has no data", provider=self.name)
        parsed.setdefault("model", model)
        return parsed

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        message = f"HTTP {status}"
        code = ""
        try:
            parsed = orjson.loads(body)
            error = parsed.get("error") if isinstance(parsed, dict) else None
            if isinstance(error, dict):
                message = str(error.get("message") or message)
                code = str(error.get("code") or error.get("type") or "")
            elif isinstance(error, str):
                message = error
        except orjson.JSONDecodeError:
            if body:
                message = body[:200].decode("utf-8", errors="replace")
        kind = kind_for_status(status, f"{message} {code}")
        return ProviderError(
            kind, message, status=status, retry_after=retry_after(headers), provider=self.name
        )


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI: deployments in the path, ``api-version`` in the query, ``api-key`` header."""

    def __init__(self) -> None:
        super().__init__("azure-openai")

    def _headers(self, target: Target) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if target.api_key:
            headers["api-key"] = target.api_key
        return headers

    def _deployment_url(self, target: Target, operation: str) -> str:
        deployment = target.azure_deployment or target.model
        base = target.endpoint.rstrip("/")
        return f"{base}/openai/deployments/{deployment}/{operation}?api-version={target.azure_api_version}"

    def _chat_url(self, target: Target) -> str:
        return self._deployment_url(target, "chat/completions")

    def _embeddings_url(self, target: Target) -> str:
        return self._deployment_url(target, "embeddings")
