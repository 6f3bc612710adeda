"""Google Gemini through the Gemini API (``generativelanguage.googleapis.com``, ``x-goog-api-key``).

OpenAI chat becomes ``models/{model}:generateContent`` (or ``:streamGenerateContent?alt=sse``),
embeddings ``:batchEmbedContents``. Neighbours: ``base.py`` (the contract), ``openai_fields.py``
(reading the OpenAI request), ``google_stream.py`` (reading answers, streamed or not, and errors).

Translation, and what is approximated:

- ``system``/``developer`` messages become ``systemInstruction``, wherever they stood; roles are
  ``user`` and ``model``, and consecutive contents of one role are merged;
- content parts: text; ``data:`` images, audio and files as ``inlineData``; http(s) image URLs as
  ``fileData`` with a MIME type guessed from the name (Gemini fetches them);
- assistant ``tool_calls`` become ``functionCall`` parts; a thought signature the app echoed back
  (``extra_content.google.thought_signature``, see ``google_stream.py``) is returned; a step with no
  signature gets Google's documented placeholder on its first call, so Gemini 3 accepts histories
  that came from elsewhere (or from apps that drop unknown fields);
- ``tool`` messages become ``functionResponse`` parts named after the matching earlier tool call; the
  result is the JSON object the tool returned, or ``{"output": ...}`` for anything else;
- tools are sent with ``parametersJsonSchema`` (plain JSON Schema, ``additionalProperties`` included),
  ``tool_choice`` as ``functionCallingConfig`` (AUTO / NONE / ANY, a named function as ANY with
  ``allowedFunctionNames``);
- ``response_format`` json_object/json_schema: ``responseMimeType: application/json`` with
  ``responseJsonSchema``, which Gemini enforces;
- ``logprobs``, ``parallel_tool_calls`` and ``reasoning_effort`` are dropped.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from ..ids import new_id
from .base import Target, UpstreamRequest
from .common import completion, encode, loads
from .errors import ErrorKind, ProviderError
from .google_stream import GeminiStreamDecoder, gemini_error, gemini_usage, read_response
from .openai_fields import (
    content_text,
    max_output_tokens,
    parse_data_uri,
    stop_list,
    tool_arguments,
    unsupported,
)

__all__ = ["GeminiStreamDecoder", "GoogleAdapter", "generate_content_body"]

Json = dict[str, Any]
NAME = "google"
DEFAULT_ENDPOINT = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
# Google's documented placeholder for function calls that Gemini did not sign (e.g. from another model).
SKIP_SIGNATURE = "skip_thought_signature_validator"
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}


# --- OpenAI request -> GenerateContentRequest ------------------------------------------------------


def generate_content_body(body: Json) -> Json:
    """The ``GenerateContentRequest`` (the model goes in the URL) for an OpenAI chat request."""
    system: list[Json] = []
    contents: list[Json] = []
    call_names: dict[str, str] = {}  # tool call id -> function name, from earlier assistant messages
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            text = content_text(message.get("content"))
            if text:
                system.append({"text": text})
        elif role == "user":
            _append(contents, "user", _user_parts(message.get("content")))
        elif role == "assistant":
            _append(contents, "model", _model_parts(message, call_names))
        elif role == "tool":
            _append(contents, "user", [_function_response(message, call_names)])
        else:
            raise unsupported(NAME, f"{role!r} messages (legacy function calling); use tools")

    out: Json = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = [_declaration(tool["function"]) for tool in body.get("tools") or [] if tool.get("function")]
    if tools:
        out["tools"] = [{"functionDeclarations": tools}]
        calling = _function_calling(body.get("tool_choice"))
        if calling:
            out["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


def _append(contents: list[Json], role: str, parts: list[Json]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _user_parts(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[Json] = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_media_part(str((part.get("image_url") or {}).get("url", "")), "image/jpeg"))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = _AUDIO_TYPES.get(str(audio.get("format")), f"audio/{audio.get('format')}")
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data", "")}})
        elif kind == "file":
            file = part.get("file") or {}
            if not file.get("file_data"):
                raise unsupported(
                    NAME, "file parts without inline file_data (OpenAI file ids mean nothing here)"
                )
            parts.append(_media_part(str(file["file_data"]), "application/pdf"))
        else:
            raise unsupported(NAME, f"{kind} content parts")
    return parts


def _media_part(url: str, default_type: str) -> Json:
    data_uri = parse_data_uri(url)
    if data_uri is not None:
        return {"inlineData": {"mimeType": data_uri.media_type, "data": data_uri.data}}
    if url.startswith(("https://", "http://", "gs://")):
        guessed, _ = mimetypes.guess_type(url.partition("?")[0])
        return {"fileData": {"mimeType": guessed or default_type, "fileUri": url}}
    raise unsupported(NAME, f"media that is neither a data: URI nor a URL ({url[:40]!r})")


def _model_parts(message: Mapping[str, Any], call_names: dict[str, str]) -> list[Json]:
    if message.get("function_call"):
        raise unsupported(NAME, "assistant function_call (legacy function calling); use tool_calls")
    parts: list[Json] = []
    text = content_text(message.get("content"))
    if text:
        parts.append({"text": text})
    calls = message.get("tool_calls") or []
    signatures = [_signature(call) for call in calls]
    if calls and not any(signatures):
        # Gemini signs the first call of a step; a step it did not sign gets the placeholder there.
        signatures[0] = SKIP_SIGNATURE
    for call, signature in zip(calls, signatures, strict=True):
        function = call.get("function") or {}
        name = str(function.get("name", ""))
        call_names[str(call.get("id"))] = name
        part: Json = {"functionCall": {"name": name, "args": tool_arguments(function.get("arguments"), NAME)}}
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _signature(call: Mapping[str, Any]) -> str:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) else ""


def _function_response(message: Mapping[str, Any], call_names: Mapping[str, str]) -> Json:
    call_id = str(message.get("tool_call_id"))
    name = call_names.get(call_id)
    if name is None:
        raise ProviderError(
            ErrorKind.BAD_REQUEST,
            f"tool message answers tool call {call_id!r}, which no earlier assistant message made; "
            "Gemini needs the function's name",
            provider=NAME,
        )
    text = content_text(message.get("content"))
    try:
        result = orjson.loads(text) if text else ""
    except orjson.JSONDecodeError:
        result = text
    # Gemini wants an object; by the API's convention "output" holds a result that is not one.
    response = result if isinstance(result, dict) else {"output": result}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(function: Mapping[str, Any]) -> Json:
    out: Json = {"name": function.get("name", "")}
    if function.get("description"):
        out["description"] = function["description"]
    parameters = function.get("parameters")
    if isinstance(parameters, dict) and parameters:
        out["parametersJsonSchema"] = {k: v for k, v in parameters.items() if k != "$schema"}
    return out


def _function_calling(choice: Any) -> Json | None:
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    return None


def _generation_config(body: Json) -> Json:
    config: Json = {}
    limit = max_output_tokens(body)
    if limit is not None:
        config["maxOutputTokens"] = limit
    for openai_name, gemini_name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(openai_name) is not None:
            config[gemini_name] = body[openai_name]
    stops = stop_list(body)
    if stops:
        config["stopSequences"] = stops
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config["responseJsonSchema"] = {k: v for k, v in schema.items() if k != "$schema"}
    return config


# --- the adapter -----------------------------------------------------------------------------------


def _model_path(model: str) -> str:
    """``models/gemini-2.5-flash`` from ``gemini-2.5-flash``; ``tunedModels/...`` stays as it is."""
    path = model if "/" in model else f"models/{model}"
    return quote(path, safe="/-_.~")


class GoogleAdapter:
    """The Gemini API (Google AI Studio keys)."""

    name = NAME

    def _url(self, target: Target, method: str) -> str:
        base = (target.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        if not base.endswith(("/v1", "/v1beta", "/v1alpha")):  # the SDK's base URL has no version
            base = f"{base}/{API_VERSION}"
        return f"{base}/{_model_path(target.model)}:{method}"

    def _headers(self, target: Target, accept: str = "application/json") -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": accept}
        if target.api_key:
            headers["x-goog-api-key"] = target.api_key
        return headers

    def chat_request(self, target: Target, body: Json, *, stream: bool) -> UpstreamRequest:
        payload = encode(generate_content_body(body), NAME)
        if stream:
            url = self._url(target, "streamGenerateContent") + "?alt=sse"
            return UpstreamRequest("POST", url, self._headers(target, "text/event-stream"), payload)
        return UpstreamRequest("POST", self._url(target, "generateContent"), self._headers(target), payload)

    def parse_chat(self, body: bytes, *, model: str) -> Json:
        parsed = loads(body, NAME)
        piece = read_response(parsed)
        if piece.finish is None and not piece.text and not piece.tool_calls:
            raise ProviderError(ErrorKind.PROTOCOL, "Gemini answer has no candidate", provider=NAME)
        message: Json = {"role": "assistant", "content": piece.text or (None if piece.tool_calls else "")}
        message["refusal"] = None
        finish = piece.finish or "stop"
        if piece.tool_calls:
            message["tool_calls"] = piece.tool_calls
            finish = "tool_calls" if finish == "stop" else finish
        return completion(
            id=f"chatcmpl-{parsed.get('responseId') or new_id()}",
            model=model,
            message=message,
            finish_reason=finish,
            usage_=gemini_usage(parsed.get("usageMetadata")),
        )

    def chat_stream_decoder(self, *, model: str, include_usage: bool) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(model=model, include_usage=include_usage)

    def embeddings_request(self, target: Target, body: Json) -> UpstreamRequest:
        value = body.get("input")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise unsupported(NAME, "token-id embedding inputs; send text")
        model = _model_path(target.model)
        requests = []
        for text in texts:
            request: Json = {"model": model, "content": {"parts": [{"text": text}]}}
            if body.get("dimensions"):
                request["outputDimensionality"] = body["dimensions"]
            requests.append(request)
        payload = encode({"requests": requests}, NAME)
        return UpstreamRequest(
            "POST", self._url(target, "batchEmbedContents"), self._headers(target), payload
        )

    def parse_embeddings(self, body: bytes, *, model: str) -> Json:
        parsed = loads(body, NAME)
        embeddings = parsed.get("embeddings") if isinstance(parsed, dict) else None
        if not isinstance(embeddings, list):
            raise ProviderError(ErrorKind.PROTOCOL, "embeddings answer has no embeddings", provider=NAME)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": e.get("values", []) if isinstance(e, dict) else [],
            }
            for i, e in enumerate(embeddings)
        ]
        # batchEmbedContents reports no token counts.
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        return gemini_error(status, headers, body)
