"""Pure conversions between ``llmroute.v1.Router`` messages and the OpenAI dicts the router core speaks.

Requests go proto -> OpenAI chat/embeddings dict, which ``openai_api/validate.py`` then checks exactly
as it checks an HTTP body, so both fronts refuse the same things with the same messages. Only what the
proto cannot say on its own is checked here (an unset role, both content forms at once, JSON text that
does not parse); those errors name the proto field. Answers go OpenAI dict -> proto, tolerating missing
or null fields, since adapters for other providers build these dicts. ``grpc_front.py`` is the only
caller; nothing here does I/O.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

import orjson

from llmroute_proto.v1 import config_pb2
from llmroute_proto.v1 import router_pb2 as pb

from .config.snapshot import Snapshot
from .openai_api.errors import bad_request
from .service import Hints, RouteMeta

__all__ = [
    "chat_body",
    "chat_chunk",
    "chat_response",
    "embed_body",
    "embed_response",
    "hints_for",
    "list_models_response",
    "route_info",
    "token_usage",
]

Json = dict[str, Any]
_UINT32_MAX = 2**32 - 1

# ChatRequest's `optional` scalars: sent on only when the client set them.
_OptionalField = Literal[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "parallel_tool_calls",
]
_OPTIONAL_FIELDS: tuple[_OptionalField, ...] = get_args(_OptionalField)

_ROLE_NAMES = {
    pb.ROLE_SYSTEM: "system",
    pb.ROLE_DEVELOPER: "developer",
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_TOOL: "tool",
}
_ROLES = {name: role for role, name in _ROLE_NAMES.items()}
_TOOL_CHOICE_MODES = {
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
}
_FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
    "function_call": pb.FINISH_REASON_TOOL_CALLS,  # the legacy name of the same thing
    "content_filter": pb.FINISH_REASON_CONTENT_FILTER,
}
# RouteMeta.cache carries the x-llmroute-cache header value.
_CACHE = {
    "off": config_pb2.CACHE_STATUS_BYPASS,
    "bypass": config_pb2.CACHE_STATUS_BYPASS,
    "miss": config_pb2.CACHE_STATUS_MISS,
    "hit": config_pb2.CACHE_STATUS_HIT,
    "semantic-hit": config_pb2.CACHE_STATUS_SEMANTIC_HIT,
}
# -- requests: proto -> OpenAI dict ----------------------------------------------------------------


def hints_for(routing: pb.RoutingHints, metadata: Mapping[str, str], user: str) -> Hints:
    """Routing hints from x-llmroute-* metadata, overridden by the fields set in the request."""
    base = Hints.from_headers(metadata, {"user": user} if user else {})
    return dataclasses.replace(
        base,
        task=routing.task or base.task,
        tier=routing.tier or base.tier,
        tenant=routing.tenant or base.tenant,
        user=routing.user or base.user,
        no_cache=routing.no_cache or base.no_cache,
    )


def _json_text(text: str, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"{where} is not valid JSON: {exc}", where, "invalid_json") from None


def _part(part: pb.ContentPart, where: str) -> Json:
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "image_url":
        image: Json = {"url": part.image_url.url}
        if part.image_url.detail:
            image["detail"] = part.image_url.detail
        return {"type": "image_url", "image_url": image}
    if kind == "image_data":
        data = part.image_data
        if not data.data:
            raise bad_request(f"{where}.image_data.data is empty", f"{where}.image_data.data")
        if not data.media_type.startswith("image/"):
            raise bad_request(
                f'{where}.image_data.media_type must be an image type such as "image/png", '
                f"got {data.media_type!r}",
                f"{where}.image_data.media_type",
            )
        url = f"data:{data.media_type};base64,{base64.b64encode(data.data).decode('ascii')}"
        image = {"url": url}
        if data.detail:
            image["detail"] = data.detail
        return {"type": "image_url", "image_url": image}
    raise bad_request(
        f"{where} has no part set: set text, image_url or image_data", where, "missing_required_parameter"
    )


def _message(message: pb.ChatMessage, where: str) -> Json:
    role = _ROLE_NAMES.get(message.role)
    if role is None:
        detail = "is required" if message.role == pb.ROLE_UNSPECIFIED else f"has unknown value {message.role}"
        raise bad_request(
            f"{where}.role {detail}: use ROLE_SYSTEM, ROLE_DEVELOPER, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL",
            f"{where}.role",
            "missing_required_parameter" if message.role == pb.ROLE_UNSPECIFIED else "invalid_value",
        )
    out: Json = {"role": role}
    if message.HasField("content"):
        if message.content_parts:
            raise bad_request(
                f"{where}.content_parts must be empty when {where}.content is set: send one of them",
                f"{where}.content_parts",
            )
        out["content"] = message.content
    elif message.content_parts:
        out["content"] = [
            _part(part, f"{where}.content_parts[{index}]") for index, part in enumerate(message.content_parts)
        ]
    elif role == "assistant":
        out["content"] = None  # a turn that only calls tools
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _tool(tool: pb.Tool, where: str) -> Json:
    function: Json = {"name": tool.function.name}
    if tool.function.description:
        function["description"] = tool.function.description
    if tool.function.parameters_json:
        function["parameters"] = _json_text(
            tool.function.parameters_json, f"{where}.function.parameters_json"
        )
    if tool.function.HasField("strict"):
        function["strict"] = tool.function.strict
    return {"type": "function", "function": function}


def _tool_choice(choice: pb.ToolChoice) -> str | Json | None:
    kind = choice.WhichOneof("choice")
    if kind == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    if kind == "mode":
        if choice.mode == pb.TOOL_CHOICE_MODE_UNSPECIFIED:
            return None
        mode = _TOOL_CHOICE_MODES.get(choice.mode)
        if mode is None:
            raise bad_request(f"tool_choice.mode has unknown value {choice.mode}", "tool_choice.mode")
        return mode
    return None


def _response_format(fmt: pb.ResponseFormat) -> Json | None:
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_UNSPECIFIED:
        return None
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_TEXT:
        return {"type": "text"}
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return {"type": "json_object"}
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        spec = fmt.json_schema
        schema: Json = {"name": spec.name}
        if spec.description:
            schema["description"] = spec.description
        if spec.schema_json:
            schema["schema"] = _json_text(spec.schema_json, "response_format.json_schema.schema_json")
        if spec.HasField("strict"):
            schema["strict"] = spec.strict
        return {"type": "json_schema", "json_schema": schema}
    raise bad_request(f"response_format.type has unknown value {fmt.type}", "response_format.type")


def chat_body(request: pb.ChatRequest, *, stream: bool) -> Json:
    """The OpenAI chat-completions body equivalent to ``request`` (not yet validated)."""
    body: Json = {
        "messages": [_message(message, f"messages[{i}]") for i, message in enumerate(request.messages)]
    }
    if request.model:  # proto3 cannot tell "" from unset: both are "model is required"
        body["model"] = request.model
    if request.tools:
        body["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(request.tools)]
    if request.HasField("tool_choice"):
        choice = _tool_choice(request.tool_choice)
        if choice is not None:
            body["tool_choice"] = choice
    if request.HasField("response_format"):
        fmt = _response_format(request.response_format)
        if fmt is not None:
            body["response_format"] = fmt
    for name in _OPTIONAL_FIELDS:
        if request.HasField(name):
            body[name] = getattr(request, name)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.user:
        body["user"] = request.user
    if stream:
        body["stream"] = True
    return body


def embed_body(request: pb.EmbedRequest) -> Json:
    """The OpenAI embeddings body equivalent to ``request`` (not yet validated)."""
    body: Json = {"input": list(request.input)}
    if request.model:
        body["model"] = request.model
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.user:
        body["user"] = request.user
    return body


# -- answers: OpenAI dict -> proto -----------------------------------------------------------------


def _int(value: Any, *, high: int = _UINT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return max(0, min(int(value), high))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> Iterable[Json]:
    return (item for item in value if isinstance(item, dict)) if isinstance(value, list) else ()


def _content_text(content: Any) -> str | None:
    """An answer's content as text; list-shaped content (rare in answers) is joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_str(part.get("text")) for part in _dicts(content))
    return None


def token_usage(usage: Any) -> pb.TokenUsage | None:
    """OpenAI ``usage`` -> TokenUsage; None when the provider reported none."""
    if not isinstance(usage, dict) or not usage:
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    total = _int(usage.get("total_tokens")) or min(prompt + completion, _UINT32_MAX)
    return pb.TokenUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, cached_tokens=cached
    )


def route_info(meta: RouteMeta) -> pb.RouteInfo:
    """What the x-llmroute-* response headers say, as a RouteInfo."""
    return pb.RouteInfo(
        backend=meta.backend,
        region=meta.region,
        attempts=_int(meta.attempts),
        cost_usd=meta.cost_usd or 0.0,
        cache=_CACHE.get(meta.cache, config_pb2.CACHE_STATUS_UNSPECIFIED),
    )


def _tool_call(call: Json) -> pb.ToolCall:
    function = _obj(call.get("function"))
    return pb.ToolCall(
        id=_str(call.get("id")),
        function=pb.FunctionCall(name=_str(function.get("name")), arguments=_str(function.get("arguments"))),
    )


def chat_response(response: Json, meta: RouteMeta) -> pb.ChatResponse:
    """An OpenAI ``chat.completion`` dict and its route metadata -> ChatResponse."""
    out = pb.ChatResponse(
        id=_str(response.get("id")),
        created=_int(response.get("created"), high=2**63 - 1),
        model=_str(response.get("model")),
        system_fingerprint=_str(response.get("system_fingerprint")),
        route=route_info(meta),
    )
    for position, choice in enumerate(_dicts(response.get("choices"))):
        message = _obj(choice.get("message"))
        answer = pb.ChatMessage(
            role=_ROLES.get(_str(message.get("role")), pb.ROLE_ASSISTANT),
            name=_str(message.get("name")),
            tool_calls=[_tool_call(call) for call in _dicts(message.get("tool_calls"))],
        )
        text = _content_text(message.get("content"))
        if text is not None:
            answer.content = text
        index = choice.get("index")
        out.choices.append(
            pb.Choice(
                index=_int(index) if index is not None else position,
                message=answer,
                finish_reason=_FINISH_REASONS.get(
                    _str(choice.get("finish_reason")), pb.FINISH_REASON_UNSPECIFIED
                ),
            )
        )
    usage = token_usage(response.get("usage"))
    if usage is not None:
        out.usage.CopyFrom(usage)
    return out


def chat_chunk(chunk: Json) -> pb.ChatChunk:
    """An OpenAI ``chat.completion.chunk`` dict -> ChatChunk (without route info)."""
    out = pb.ChatChunk(
        id=_str(chunk.get("id")),
        created=_int(chunk.get("created"), high=2**63 - 1),
        model=_str(chunk.get("model")),
    )
    for position, choice in enumerate(_dicts(chunk.get("choices"))):
        delta = _obj(choice.get("delta"))
        index = choice.get("index")
        part = out.choices.add(
            index=_int(index) if index is not None else position,
            finish_reason=_FINISH_REASONS.get(
                _str(choice.get("finish_reason")), pb.FINISH_REASON_UNSPECIFIED
            ),
        )
        part.delta.SetInParent()
        role = delta.get("role")
        if isinstance(role, str):
            part.delta.role = _ROLES.get(role, pb.ROLE_UNSPECIFIED)
        text = _content_text(delta.get("content"))
        if text is not None:
            part.delta.content = text
        for call_position, call in enumerate(_dicts(delta.get("tool_calls"))):
            piece = part.delta.tool_calls.add(
                index=_int(call.get("index", call_position)), id=_str(call.get("id"))
            )
            if isinstance(call.get("function"), dict):
                piece.function.name = _str(call["function"].get("name"))
                piece.function.arguments = _str(call["function"].get("arguments"))
    usage = token_usage(chunk.get("usage"))
    if usage is not None:
        out.usage.CopyFrom(usage)
    return out


def _vector(value: Any) -> list[float]:
    if isinstance(value, str):  # encoding_format=base64: little-endian float32
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
    if isinstance(value, list):
        return [float(x) for x in value if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return []


def embed_response(response: Json, meta: RouteMeta) -> pb.EmbedResponse:
    """An OpenAI embeddings answer and its route metadata -> EmbedResponse, vectors in input order."""
    items = list(_dicts(response.get("data")))
    items.sort(key=lambda item: _int(item.get("index")))
    out = pb.EmbedResponse(
        model=_str(response.get("model")),
        data=[
            pb.Embedding(index=_int(item.get("index")), embedding=_vector(item.get("embedding")))
            for item in items
        ],
        route=route_info(meta),
    )
    usage = token_usage(response.get("usage"))
    if usage is not None:
        out.usage.CopyFrom(usage)
    return out


def list_models_response(snapshot: Snapshot | None) -> pb.ListModelsResponse:
    """The logical models of a config, sorted by id; empty before any config loads."""
    if snapshot is None:
        return pb.ListModelsResponse()
    return pb.ListModelsResponse(
        models=[
            pb.ModelInfo(id=name, owned_by=entry.route.namespace, route=entry.route.name)
            for name, entry in sorted(snapshot.models.items())
        ]
    )
