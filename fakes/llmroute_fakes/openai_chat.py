"""The OpenAI Chat Completions and Embeddings wire formats, as pure functions.

Neighbours: ``openai_api`` (OpenAI and OpenAI-compatible servers such as vLLM) and ``azure_api``
(Azure OpenAI) serve these bodies on their own paths, with their own auth and error shapes. The three
differ in small ways, captured by :data:`Flavour`:

- ``openai``: ``service_tier``/``system_fingerprint``, usage details;
- ``azure``: ``prompt_filter_results`` and per-choice ``content_filter_results``; a stream starts
  with a chunk whose ``choices`` is empty, which clients must tolerate;
- ``vllm``: the extra and ``null`` fields vLLM emits (``stop_reason``, ``reasoning_content``,
  ``tool_calls: []``), usage only in the final chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .conversation import Conversation, Reply, ToolDef, ToolMode, Turn
from .embeddings import MAX_DIMENSIONS, embed, to_base64_f32
from .protocol import ApiError
from .replies import estimate_tokens, json_pieces, text_pieces

__all__ = ["Flavour", "completion", "completion_chunks", "embeddings_response", "parse_chat"]

Flavour = Literal["openai", "azure", "vllm"]

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}
_SAFE = {"filtered": False, "severity": "safe"}
_CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_PROMPT_FILTER = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            **_CONTENT_FILTER,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]
_EMBEDDING_DIMENSIONS = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536}


def parse_chat(body: Mapping[str, Any]) -> Conversation:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "Invalid 'messages': expected a non-empty array of messages.", param="messages")
    system: list[str] = []
    turns: list[Turn] = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise ApiError(400, "Invalid 'messages': each message must be an object.", param="messages")
        role, text = message.get("role"), _content_text(message.get("content"))
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("tool", "function"):
            turns.append(Turn("tool", text))
        elif role == "assistant":
            turns.append(Turn("assistant", text))
        elif role == "user":
            turns.append(Turn("user", text))
        else:
            raise ApiError(
                400,
                f"Invalid value: {role!r}. Supported roles are system, developer, user, assistant and tool.",
                param="messages",
            )

    tools = tuple(
        ToolDef(
            name=str(fn.get("name", "")),
            description=str(fn.get("description") or ""),
            parameters=fn.get("parameters") if isinstance(fn.get("parameters"), Mapping) else None,
        )
        for tool in body.get("tools") or []
        if isinstance(tool, Mapping) and isinstance(fn := tool.get("function"), Mapping)
    )
    mode: ToolMode = "auto"
    forced: str | None = None
    choice = body.get("tool_choice")
    if choice in ("none", "required"):
        mode = choice
    elif isinstance(choice, Mapping) and isinstance(fn := choice.get("function"), Mapping):
        forced = str(fn.get("name"))

    response_format = body.get("response_format")
    schema: Mapping[str, Any] | None = None
    json_mode = False
    if isinstance(response_format, Mapping):
        if response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema", {}) if isinstance(spec, Mapping) else {}
        json_mode = response_format.get("type") == "json_object"

    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return Conversation(
        turns=tuple(turns),
        system="\n".join(system),
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        json_schema=schema,
        json_mode=json_mode,
        max_tokens=limit if isinstance(limit, int) else None,
    )


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def completion(reply: Reply, *, id: str, model: str, created: int, flavour: Flavour) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    calls = [_tool_call(call.id, call.name, call.arguments_json) for call in reply.tool_calls]
    if flavour == "vllm":
        message.update(
            annotations=None, audio=None, function_call=None, tool_calls=calls, reasoning_content=None
        )
    else:
        message["annotations"] = []
        if calls:
            message["tool_calls"] = calls
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _FINISH[reply.finish],
    }
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(reply, flavour),
    }
    if flavour == "openai":
        body.update(service_tier="default", system_fingerprint="fp_fake")
    elif flavour == "azure":
        choice["content_filter_results"] = _CONTENT_FILTER
        body.update(system_fingerprint="fp_fake", prompt_filter_results=_PROMPT_FILTER)
    else:
        choice["stop_reason"] = None
        body.update(system_fingerprint=None, service_tier=None, prompt_logprobs=None, kv_transfer_params=None)
    return body


def completion_chunks(
    reply: Reply, *, id: str, model: str, created: int, flavour: Flavour, include_usage: bool
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed reply (``[DONE]`` is the caller's)."""
    extra: dict[str, Any] = {}
    if flavour == "openai":
        extra = {"service_tier": "default", "system_fingerprint": "fp_fake"}
    elif flavour == "azure":
        extra = {"system_fingerprint": "fp_fake"}
    # OpenAI marks every chunk with "usage": null when usage was asked for; vLLM only sends the last.
    if include_usage and flavour != "vllm":
        extra["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if flavour == "azure" and ("content" in delta or finish):
            choice["content_filter_results"] = _CONTENT_FILTER if delta.get("content") else {}
        if flavour == "vllm" and finish:
            choice["stop_reason"] = None
        return {
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
            **extra,
        }

    chunks: list[dict[str, Any]] = []
    if flavour == "azure":
        chunks.append(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": _PROMPT_FILTER,
            }
        )
    if reply.tool_calls:
        for index, call in enumerate(reply.tool_calls):
            head = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            delta: dict[str, Any] = {"tool_calls": [head]}
            if index == 0:
                delta = {"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}
            chunks.append(chunk(delta))
            chunks.extend(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in json_pieces(call.arguments_json)
            )
    else:
        chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        chunks.extend(chunk({"content": piece}) for piece in text_pieces(reply.text))
    chunks.append(chunk({}, _FINISH[reply.finish]))
    if include_usage:
        chunks.append({**chunk({}), "choices": [], "usage": _usage(reply, flavour)})
    return chunks


def _tool_call(call_id: str, name: str, arguments_json: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments_json}}


def _usage(reply: Reply, flavour: Flavour) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.total_tokens,
    }
    if flavour == "vllm":
        usage["prompt_tokens_details"] = None
    else:
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def embeddings_response(body: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """Answer a ``/embeddings`` request: float or base64 vectors, one per input."""
    texts, tokens = _embedding_inputs(body.get("input"))
    dimensions = body.get("dimensions")
    if not isinstance(dimensions, int) or dimensions <= 0:
        dimensions = _EMBEDDING_DIMENSIONS.get(model, 1536)
    if dimensions > MAX_DIMENSIONS:
        raise ApiError(
            400,
            f"Invalid value for 'dimensions': at most {MAX_DIMENSIONS}, got {dimensions}.",
            param="dimensions",
        )
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, f"Invalid value for 'encoding_format': {encoding!r}.", param="encoding_format")
    data = []
    for index, text in enumerate(texts):
        vector = embed(text, dimensions)
        value: Any = to_base64_f32(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _embedding_inputs(value: Any) -> tuple[list[str], int]:
    """Texts to embed and their token count; token-id inputs are embedded as their decimal text."""
    if isinstance(value, str):
        return [value], estimate_tokens(value)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value), sum(estimate_tokens(v) for v in value)
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))], len(value)
        if all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in value):
            return [" ".join(map(str, v)) for v in value], sum(len(v) for v in value)
    raise ApiError(
        400, "'input' must be a string, an array of strings, or an array of token arrays.", param="input"
    )
