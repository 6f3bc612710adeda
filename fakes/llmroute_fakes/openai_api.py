"""Fake OpenAI API (``--protocol openai``) and OpenAI-compatible servers (``openai-compatible``).

Neighbours: ``openai_chat`` renders the bodies; ``azure_api`` subclasses :class:`OpenAIProtocol`
for Azure's paths, auth and errors. Endpoints: ``POST /v1/chat/completions`` (JSON or SSE, with
``stream_options.include_usage``, tools and ``response_format``), ``POST /v1/embeddings``,
``GET /v1/models[/{model}]``, and the Files and Batches API (``openai_batches``); the compatible
flavour has no batches and adds vLLM's ``GET /health`` and ``/version``.

Auth is ``Authorization: Bearer``. An OpenAI-compatible server only checks it when configured with a
key, as vLLM does with ``--api-key``. Errors are ``{"error": {"message", "type", "param", "code"}}``,
and an in-stream error is a ``data:`` event carrying that same object, which the SDK raises.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .openai_batches import OpenAIBatchApi
from .openai_chat import Flavour, completion, completion_chunks, embeddings_response, parse_chat
from .protocol import (
    EXCHANGE,
    ApiError,
    Exchange,
    ProviderProtocol,
    default_message,
    json_response,
    retry_after_header,
)
from .replies import plan_reply
from .sse import SSE_CONTENT_TYPE, sse_frame
from .streaming import send_stream

__all__ = ["OpenAICompatibleProtocol", "OpenAIProtocol"]

# status -> (error type, error code), as api.openai.com answers them.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", None),  # a wrong key says code "invalid_api_key"; a missing one, none
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", None),
    409: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}
_MESSAGES = {
    429: "Rate limit reached for requests per min (RPM). Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The server is overloaded or not ready yet.",
}


class OpenAIProtocol(ProviderProtocol):
    name = "openai"
    sdk_path = "/v1"
    flavour: Flavour = "openai"
    owned_by = "system"
    default_models: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")

    #: Serves the Files and Batches API (``openai_batches``); vLLM and its kin do not.
    batch_api = True

    def routes(self) -> list[web.RouteDef]:
        routes = [
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/embeddings", self.embeddings),
            web.get("/v1/models", self.list_models),
            web.get("/v1/models/{model}", self.get_model),
        ]
        if self.batch_api:
            routes += self.batches(("/v1",), ("/v1/chat/completions", "/v1/embeddings")).routes()
        return routes

    def batches(self, prefixes: tuple[str, ...], endpoints: tuple[str, ...]) -> OpenAIBatchApi:
        return OpenAIBatchApi(
            prefixes=prefixes, endpoints=endpoints, answer=self.batch_answer, error_object=self.error_object
        )

    def batch_answer(
        self, exchange: Exchange, endpoint: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """One request of a batch, answered as the live endpoint would answer it (no faults)."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter", param="model")
        if endpoint.endswith("/embeddings"):
            return 200, embeddings_response(body, model=model)
        reply = plan_reply(
            parse_chat(body), protocol=self.name, tool_knob=None, new_id=exchange.state.id_factory("call_")
        )
        completion_id = exchange.state.new_id("chatcmpl-")
        return 200, completion(
            reply, id=completion_id, model=model, created=int(time.time()), flavour=self.flavour
        )

    # --- auth and errors ---

    def authenticate(self, request: web.Request) -> None:
        configured = request[EXCHANGE].state.config.api_key
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if configured is not None and token.strip() != configured:
            raise ApiError(401, f"Incorrect API key provided: {_redact(token)}.", code="invalid_api_key")

    def error_object(self, error: ApiError) -> dict[str, Any]:
        kind, code = _ERROR_KINDS.get(error.status, ("server_error", None))
        message = error.message or _MESSAGES.get(error.status) or default_message(error.status)
        return {"message": message, "type": kind, "param": error.param, "code": error.code or code}

    def error_response(self, error: ApiError) -> web.Response:
        return json_response(
            {"error": self.error_object(error)}, status=error.status, headers=retry_after_header(error)
        )

    def stream_error(self, status: int | None) -> bytes:
        return sse_frame({"error": self.error_object(ApiError(status or self.stream_error_status))})

    # --- endpoints ---

    def model_for(self, request: web.Request, body: dict[str, Any]) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter", param="model")
        return model

    def response_headers(self, exchange: Exchange) -> dict[str, str]:
        elapsed_ms = max(0, int((time.time() - exchange.record.received_at) * 1000))
        return {"x-request-id": exchange.state.new_id("req_"), "openai-processing-ms": str(elapsed_ms)}

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        body = exchange.json_object()
        model = self.model_for(request, body)
        reply = plan_reply(
            parse_chat(body),
            protocol=self.name,
            tool_knob=exchange.faults.tool_call,
            new_id=exchange.state.id_factory("chatcmpl-tool-" if self.flavour == "vllm" else "call_"),
        )
        completion_id = exchange.state.new_id("chatcmpl-")
        created = int(time.time())
        headers = self.response_headers(exchange)
        if not body.get("stream"):
            payload = completion(reply, id=completion_id, model=model, created=created, flavour=self.flavour)
            return json_response(payload, headers=headers)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = completion_chunks(
            reply,
            id=completion_id,
            model=model,
            created=created,
            flavour=self.flavour,
            include_usage=include_usage,
        )
        frames = [*(sse_frame(chunk) for chunk in chunks), sse_frame("[DONE]")]
        return await send_stream(
            request, frames, content_type=SSE_CONTENT_TYPE, error_frame=self.stream_error, headers=headers
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        body = exchange.json_object()
        payload = embeddings_response(body, model=self.model_for(request, body))
        return json_response(payload, headers=self.response_headers(exchange))

    def model_object(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": self.owned_by}

    def models(self, request: web.Request) -> tuple[str, ...]:
        return request[EXCHANGE].state.config.models or self.default_models

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        data = [self.model_object(model) for model in self.models(request)]
        return json_response({"object": "list", "data": data})

    async def get_model(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if model not in self.models(request):
            raise ApiError(404, f"The model '{model}' does not exist", code="model_not_found")
        return json_response(self.model_object(model))


class OpenAICompatibleProtocol(OpenAIProtocol):
    """An OpenAI-compatible server as vLLM serves it (TGI's Messages API has the same shape)."""

    name = "openai-compatible"
    batch_api = False
    flavour: Flavour = "vllm"
    owned_by = "vllm"
    default_models = ("meta-llama/Llama-3.1-8B-Instruct",)

    def routes(self) -> list[web.RouteDef]:
        return [*super().routes(), web.get("/health", self.health), web.get("/version", self.version)]

    def authenticate(self, request: web.Request) -> None:
        if request.path in ("/health", "/version"):
            return
        if request[EXCHANGE].state.config.api_key is not None:
            super().authenticate(request)

    def model_object(self, model: str) -> dict[str, Any]:
        return {**super().model_object(model), "root": model, "parent": None, "max_model_len": 131072}

    async def health(self, request: web.Request) -> web.StreamResponse:
        del request
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.StreamResponse:
        del request
        return json_response({"version": "0.0.0+llmroute.fake"})


def _redact(key: str) -> str:
    key = key.strip()
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
