"""Validate what the app sent before anything is routed: clear 400s that name the field.

Hand-written checks over the decoded dict rather than a pydantic model: they run on every request,
must be cheap (a few microseconds), and must tolerate fields newer SDKs add (unknown top-level fields
pass through to OpenAI-protocol backends). Only the fields the sidecar reads or translates are
checked, each with the OpenAI parameter path (``messages[2].content[0].image_url``) in ``param``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .errors import ApiError, bad_request

__all__ = ["parse_chat", "parse_embeddings", "parse_json"]

Json = dict[str, Any]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def parse_json(body: bytes) -> Json:
    """Decode a request body that must be one JSON object."""
    if not body:
        raise bad_request("the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, not {_type(data)}", code="invalid_json")
    return data


def _type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(body: Json, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise bad_request(f"{name} must be a number, not {_type(value)}", name, "invalid_type")
    if not low <= value <= high:
        raise bad_request(f"{name} must be between {low:g} and {high:g}, got {value}", name)


def _positive_int(body: Json, name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_int(value):
        raise bad_request(f"{name} must be an integer, not {_type(value)}", name, "invalid_type")
    if value < 1:
        raise bad_request(f"{name} must be at least 1, got {value}", name)


def _model(body: Json) -> str:
    model = body.get("model")
    if model is None:
        raise bad_request(
            'model is required: the logical model name, e.g. "chat"', "model", "missing_required_parameter"
        )
    if not isinstance(model, str) or not model:
        raise bad_request(f"model must be a non-empty string, not {_type(model)}", "model", "invalid_type")
    return model


def parse_chat(body: Json) -> Json:
    """Check a chat-completions request in place; returns it for chaining."""
    _model(body)
    messages = body.get("messages")
    if messages is None:
        raise bad_request("messages is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise bad_request(f"messages must be an array, not {_type(messages)}", "messages", "invalid_type")
    if not messages:
        raise bad_request("messages must contain at least one message", "messages")
    for index, message in enumerate(messages):
        _message(message, f"messages[{index}]")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request(f"stream must be a boolean, not {_type(stream)}", "stream", "invalid_type")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object", "stream_options", "invalid_type")
        if not stream:
            raise bad_request("stream_options is only allowed when stream is true", "stream_options")
        if "include_usage" in options and not isinstance(options["include_usage"], bool):
            raise bad_request(
                "stream_options.include_usage must be a boolean",
                "stream_options.include_usage",
                "invalid_type",
            )
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise bad_request("n must be 1: llmroute returns one choice per request", "n", "unsupported_value")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad_request(f"seed must be an integer, not {_type(seed)}", "seed", "invalid_type")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request(f"user must be a string, not {_type(user)}", "user", "invalid_type")
    _stop(body.get("stop"))
    _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"), body.get("tools"))
    _response_format(body.get("response_format"))
    return body


def _message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise bad_request(f"{where} must be an object, not {_type(message)}", where, "invalid_type")
    role = message.get("role")
    if role is None:
        raise bad_request(f"{where}.role is required", f"{where}.role", "missing_required_parameter")
    if role not in _ROLES:
        raise bad_request(
            f"{where}.role must be one of {', '.join(sorted(_ROLES))}, got {role!r}", f"{where}.role"
        )
    content = message.get("content")
    if content is None:
        if role == "assistant" and (
            message.get("tool_calls") or message.get("function_call") or "content" in message
        ):
            pass
        else:
            raise bad_request(
                f"{where}.content is required for role {role}",
                f"{where}.content",
                "missing_required_parameter",
            )
    elif isinstance(content, list):
        for index, part in enumerate(content):
            _part(part, f"{where}.content[{index}]")
    elif not isinstance(content, str):
        raise bad_request(
            f"{where}.content must be a string or an array of parts, not {_type(content)}",
            f"{where}.content",
            "invalid_type",
        )
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise bad_request(
            f"{where}.tool_call_id is required for role tool",
            f"{where}.tool_call_id",
            "missing_required_parameter",
        )
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if role != "assistant" or not isinstance(tool_calls, list):
            raise bad_request(
                f"{where}.tool_calls must be an array on an assistant message",
                f"{where}.tool_calls",
                "invalid_type",
            )
        for index, call in enumerate(tool_calls):
            path = f"{where}.tool_calls[{index}]"
            if (
                not isinstance(call, dict)
                or not isinstance(call.get("id"), str)
                or not isinstance(call.get("function"), dict)
            ):
                raise bad_request(f"{path} must have an id and a function", path)
            function = call["function"]
            if not isinstance(function.get("name"), str) or not isinstance(function.get("arguments"), str):
                raise bad_request(
                    f"{path}.function needs a name and arguments (a JSON string)", f"{path}.function"
                )


def _part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise bad_request(f"{where} must be an object, not {_type(part)}", where, "invalid_type")
    kind = part.get("type")
    if kind not in _PART_TYPES:
        raise bad_request(
            f"{where}.type must be one of {', '.join(sorted(_PART_TYPES))}, got {kind!r}", f"{where}.type"
        )
    if kind == "text" and not isinstance(part.get("text"), str):
        raise bad_request(f"{where}.text must be a string", f"{where}.text", "invalid_type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}.image_url.url must be a URL or a data: URI", f"{where}.image_url.url")


def _stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad_request("stop must be a string or an array of strings", "stop", "invalid_type")
    if len(stop) > 4:
        raise bad_request(f"stop allows at most 4 sequences, got {len(stop)}", "stop")


def _tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise bad_request(f"tools must be an array, not {_type(tools)}", "tools", "invalid_type")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise bad_request(f'{where}.type must be "function"', f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad_request(
                f"{where}.function is required", f"{where}.function", "missing_required_parameter"
            )
        name = function.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise bad_request(
                f"{where}.function.name must be 1-64 letters, digits, '_', '.' or '-', got {name!r}",
                f"{where}.function.name",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise bad_request(
                f"{where}.function.parameters must be a JSON Schema object",
                f"{where}.function.parameters",
                "invalid_type",
            )


def _tool_choice(choice: Any, tools: Any) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise bad_request(
                f"tool_choice must be none, auto, required or a function, got {choice!r}", "tool_choice"
            )
        if choice == "required" and not tools:
            raise bad_request("tool_choice required needs tools", "tool_choice")
        return
    if (
        not isinstance(choice, dict)
        or choice.get("type") != "function"
        or not isinstance(choice.get("function"), dict)
    ):
        raise bad_request(
            "tool_choice must be a string or {type: function, function: {name}}",
            "tool_choice",
            "invalid_type",
        )
    name = choice["function"].get("name")
    names = {
        t["function"]["name"]
        for t in tools or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    }
    if name not in names:
        raise bad_request(
            f"tool_choice names function {name!r}, which is not in tools", "tool_choice.function.name"
        )


def _response_format(fmt: Any) -> None:
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise bad_request("response_format must be an object", "response_format", "invalid_type")
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise bad_request(
            f"response_format.type must be text, json_object or json_schema, got {kind!r}",
            "response_format.type",
        )
    if kind == "json_schema":
        schema = fmt.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise bad_request(
                "response_format.json_schema needs a name and a schema", "response_format.json_schema"
            )
        if "schema" in schema and not isinstance(schema["schema"], dict):
            raise bad_request(
                "response_format.json_schema.schema must be an object",
                "response_format.json_schema.schema",
                "invalid_type",
            )


def parse_embeddings(body: Json) -> Json:
    """Check an embeddings request in place."""
    _model(body)
    value = body.get("input")
    if value is None:
        raise bad_request("input is required", "input", "missing_required_parameter")
    ok = (
        (isinstance(value, str) and value != "")
        or (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value))
        or (isinstance(value, list) and value and all(_is_int(v) for v in value))
        or (
            isinstance(value, list)
            and value
            and all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value)
        )
    )
    if not ok:
        raise bad_request(
            "input must be a non-empty string, array of strings, or array of token arrays", "input"
        )
    if isinstance(value, list) and len(value) > 2048:
        raise bad_request(f"input allows at most 2048 items, got {len(value)}", "input")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise bad_request("encoding_format must be float or base64", "encoding_format")
    _positive_int(body, "dimensions")
    return body


def dumps(data: Json) -> bytes:
    return orjson.dumps(data)


def error_for_unknown_model(model: str, known: list[str]) -> ApiError:
    listing = ", ".join(known) if known else "none: no config is loaded"
    return ApiError(
        404,
        f"The model {model!r} does not exist here. Known models: {listing}",
        param="model",
        code="model_not_found",
    )
