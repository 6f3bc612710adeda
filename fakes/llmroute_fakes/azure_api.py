"""Fake Azure OpenAI (``--protocol azure-openai``): OpenAI's bodies on Azure's paths, auth and errors.

Neighbours: subclasses ``openai_api.OpenAIProtocol``; the bodies (with Azure's content-filter
annotations) come from ``openai_chat``. Endpoints:

- ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` and ``.../embeddings``
  (the deployment names the model; ``api-version`` is required, as on Azure);
- ``POST /openai/v1/chat/completions``, ``/openai/v1/embeddings``, ``GET /openai/v1/models``: the
  newer v1 surface, where the body's ``model`` is the deployment and ``api-version`` is optional.

Auth: the ``api-key`` header, or ``Authorization: Bearer`` (Entra ID tokens, and what the plain OpenAI
SDK sends to the v1 surface). Errors are ``{"error": {"code", "message"}}`` with Azure's codes.
Files and Batches (``openai_batches``) are under ``/openai`` (api-version required) and ``/openai/v1``;
a batch line's ``url`` is ``/chat/completions`` and its ``model`` the (Global Batch) deployment.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .openai_api import OpenAIProtocol
from .openai_batches import OpenAIBatchApi
from .openai_chat import Flavour
from .protocol import EXCHANGE, ApiError, Exchange, default_message, json_response, retry_after_header

__all__ = ["AzureOpenAIProtocol"]

_CODES = {
    400: "BadRequest",
    401: "401",
    403: "403",
    404: "404",
    408: "Timeout",
    429: "429",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_MESSAGES = {
    401: "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
    "key for an active subscription and use a correct regional API endpoint for your resource.",
    404: "Resource not found",
    429: "Requests to the ChatCompletions_Create Operation under Azure OpenAI API have exceeded call rate "
    "limit of your current OpenAI S0 pricing tier. Please retry after the time in the retry-after header.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The service is temporarily unable to process your request. Please try again later.",
}


_BATCH_ENDPOINTS = ("/chat/completions", "/embeddings", "/v1/chat/completions", "/v1/embeddings")


def _api_version(request: web.Request) -> None:
    """The classic surface (``/openai/files``, ``/openai/batches``) needs api-version; v1 does not."""
    if not request.path.startswith("/openai/v1/") and not request.query.get("api-version"):
        raise ApiError(
            400,
            "The api-version query parameter (?api-version=) is required for all requests.",
            code="MissingApiVersionParameter",
        )


class AzureOpenAIProtocol(OpenAIProtocol):
    name = "azure-openai"
    sdk_path = ""  # AzureOpenAI(azure_endpoint=<root>) appends /openai itself.
    flavour: Flavour = "azure"
    default_models = ("gpt-4o", "text-embedding-3-small")

    def routes(self) -> list[web.RouteDef]:
        deployment = "/openai/deployments/{deployment}"
        return [
            web.post(f"{deployment}/chat/completions", self.chat_completions),
            web.post(f"{deployment}/embeddings", self.embeddings),
            web.post("/openai/v1/chat/completions", self.chat_completions),
            web.post("/openai/v1/embeddings", self.embeddings),
            web.get("/openai/v1/models", self.list_models),
            # Azure's Batch: the deployment is the body's model; lines name /chat/completions.
            *self.batches(("/openai", "/openai/v1"), _BATCH_ENDPOINTS).routes(),
        ]

    def batches(self, prefixes: tuple[str, ...], endpoints: tuple[str, ...]) -> OpenAIBatchApi:
        return OpenAIBatchApi(
            prefixes=prefixes,
            endpoints=endpoints,
            answer=self.batch_answer,
            error_object=self.error_object,
            check=_api_version,
        )

    def authenticate(self, request: web.Request) -> None:
        configured = request[EXCHANGE].state.config.api_key
        key = request.headers.get("api-key", "").strip()
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if not key and scheme.lower() == "bearer":
            key = token.strip()
        if not key:
            raise ApiError(
                401,
                "Access denied due to missing subscription key. Make sure to include subscription key when "
                "making requests to an API.",
            )
        if configured is not None and key != configured:
            raise ApiError(401)

    def error_object(self, error: ApiError) -> dict[str, Any]:
        message = error.message or _MESSAGES.get(error.status) or default_message(error.status)
        return {"code": error.code or _CODES.get(error.status, str(error.status)), "message": message}

    def error_response(self, error: ApiError) -> web.Response:
        return json_response(
            {"error": self.error_object(error)}, status=error.status, headers=retry_after_header(error)
        )

    def model_for(self, request: web.Request, body: dict[str, Any]) -> str:
        deployment = request.match_info.get("deployment")
        if deployment is not None:
            if not request.query.get("api-version"):
                raise ApiError(
                    400,
                    "The api-version query parameter (?api-version=) is required for all requests.",
                    code="MissingApiVersionParameter",
                )
            return deployment
        return super().model_for(request, body)

    def response_headers(self, exchange: Exchange) -> dict[str, str]:
        request_id = exchange.state.new_id("")
        return {**super().response_headers(exchange), "apim-request-id": request_id, "x-ms-region": "East US"}
