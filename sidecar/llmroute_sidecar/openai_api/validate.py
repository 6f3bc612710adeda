"""Validate what the app sent before anything is routed: clear 400s that name the field.

Hand-written checks over the decoded dict rather than a pydantic model: they run on every request,
must be cheap (a few microseconds), and must tolerate fields newer SDKs add (unknown top-level fields
pass through to OpenAI-protocol backends). Every field the sidecar reads or translates is checked,
each with the OpenAI parameter path (``messages[2].content[0].image_url``) in ``param``.

The rule: a value's type is checked before the value is used, so no lookup, comparison or
translation downstream meets a type it did not expect (a ``role`` that is an array must be a 400
saying so, not a ``TypeError`` from a set lookup). Enumerations go through :func:`_enum`, which
checks for a string first. Downstream readers (``routing/``, ``cache/keys.py``, ``pii/``, the
adapters) may then trust the shapes checked here; they stay tolerant of the fields not checked here.
JSON nested deeper than the encoder takes (:data:`MAX_DEPTH`) is refused here too, since the body is
encoded again for the provider, the cache and the audit log. Neighbours: ``errors.py`` (the error
shape), ``headers.py`` (the x-llmroute-* request headers), ``messages.py`` (one message and its parts).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .errors import ApiError, bad_request
from .messages import Json, check_message, enum, is_int, is_number, string, type_name

__all__ = ["MAX_DEPTH", "check_nesting", "parse_chat", "parse_embeddings", "parse_json"]

# The deepest JSON orjson encodes (it refuses a 255th level); it decodes up to 1024.
MAX_DEPTH = 254
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_TOOL_CHOICES = ("none", "auto", "required")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_ENCODINGS = ("float", "base64")


def parse_json(body: bytes) -> Json:
    """Decode a request body that must be one JSON object."""
    if not body:
        raise bad_request("the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request(
            f"the request body must be a JSON object, not {type_name(data)}", code="invalid_json"
        )
    check_nesting(data, body, "the request body")
    return data


def check_nesting(value: Any, text: bytes | str, what: str, param: str | None = None) -> None:
    """Refuse ``value`` (decoded from ``text``) if it nests deeper than :data:`MAX_DEPTH` levels.

    Counting brackets in the text costs a memchr; only text with that many brackets (a long body, or a
    deep one) is encoded to find out, which is the exact test, since encoding is what would fail."""
    opening = (b"[", b"{") if isinstance(text, bytes) else ("[", "{")
    if text.count(opening[0]) + text.count(opening[1]) <= MAX_DEPTH:  # type: ignore[arg-type]
        return
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise bad_request(
            f"{what} nests arrays and objects more than {MAX_DEPTH} levels deep", param, "invalid_json"
        ) from None


def _number(body: Json, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not is_number(value):
        raise bad_request(f"{name} must be a number, not {type_name(value)}", name, "invalid_type")
    if not low <= value <= high:
        raise bad_request(f"{name} must be between {low:g} and {high:g}, got {value}", name)


def _positive_int(body: Json, name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if not is_int(value):
        raise bad_request(f"{name} must be an integer, not {type_name(value)}", name, "invalid_type")
    if value < 1:
        raise bad_request(f"{name} must be at least 1, got {value}", name)


def _boolean(container: Json, key: str, where: str) -> None:
    value = container.get(key)
    if value is not None and not isinstance(value, bool):
        raise bad_request(f"{where} must be a boolean, not {type_name(value)}", where, "invalid_type")


def _model(body: Json) -> str:
    model = body.get("model")
    if model is None:
        raise bad_request(
            'model is required: the logical model name, e.g. "chat"', "model", "missing_required_parameter"
        )
    if not isinstance(model, str) or not model:
        raise bad_request(
            f"model must be a non-empty string, not {type_name(model)}", "model", "invalid_type"
        )
    return model


def parse_chat(body: Json) -> Json:
    """Check a chat-completions request in place; returns it for chaining."""
    _model(body)
    messages = body.get("messages")
    if messages is None:
        raise bad_request("messages is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise bad_request(f"messages must be an array, not {type_name(messages)}", "messages", "invalid_type")
    if not messages:
        raise bad_request("messages must contain at least one message", "messages")
    for index, message in enumerate(messages):
        check_message(message, f"messages[{index}]")
    _boolean(body, "stream", "stream")
    stream = body.get("stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request(
                f"stream_options must be an object, not {type_name(options)}",
                "stream_options",
                "invalid_type",
            )
        if not stream:
            raise bad_request("stream_options is only allowed when stream is true", "stream_options")
        _boolean(options, "include_usage", "stream_options.include_usage")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    n = body.get("n")
    if n is not None and (not is_int(n) or n != 1):
        raise bad_request("n must be 1: llmroute returns one choice per request", "n", "unsupported_value")
    seed = body.get("seed")
    if seed is not None and not is_int(seed):
        raise bad_request(f"seed must be an integer, not {type_name(seed)}", "seed", "invalid_type")
    string(body, "user", "user")
    _boolean(body, "parallel_tool_calls", "parallel_tool_calls")
    _stop(body.get("stop"))
    _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"), body.get("tools"))
    _response_format(body.get("response_format"))
    return body


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
        raise bad_request(f"tools must be an array, not {type_name(tools)}", "tools", "invalid_type")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise bad_request(f"{where} must be an object, not {type_name(tool)}", where, "invalid_type")
        if tool.get("type") != "function":
            raise bad_request(f'{where}.type must be "function"', f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad_request(
                f"{where}.function is required", f"{where}.function", "missing_required_parameter"
            )
        name = function.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            shown = repr(name) if isinstance(name, str) or name is None else type_name(name)
            raise bad_request(
                f"{where}.function.name must be 1-64 letters, digits, '_', '.' or '-', got {shown}",
                f"{where}.function.name",
            )
        string(function, "description", f"{where}.function.description")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise bad_request(
                f"{where}.function.parameters must be a JSON Schema object, not {type_name(parameters)}",
                f"{where}.function.parameters",
                "invalid_type",
            )
        _boolean(function, "strict", f"{where}.function.strict")


def _tool_choice(choice: Any, tools: Any) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
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
    if not isinstance(name, str):
        raise bad_request(
            f"tool_choice.function.name must be a string, not {type_name(name)}",
            "tool_choice.function.name",
            "invalid_type",
        )
    # _tools ran first: every tool here is an object with a function whose name is a string.
    if not any(t["function"]["name"] == name for t in tools or []):
        raise bad_request(
            f"tool_choice names function {name!r}, which is not in tools", "tool_choice.function.name"
        )


def _response_format(fmt: Any) -> None:
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise bad_request(
            f"response_format must be an object, not {type_name(fmt)}", "response_format", "invalid_type"
        )
    kind = enum(fmt.get("type"), _RESPONSE_FORMATS, "response_format.type")
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
        string(schema, "description", "response_format.json_schema.description")
        _boolean(schema, "strict", "response_format.json_schema.strict")


def parse_embeddings(body: Json) -> Json:
    """Check an embeddings request in place."""
    _model(body)
    value = body.get("input")
    if value is None:
        raise bad_request("input is required", "input", "missing_required_parameter")
    ok = (
        (isinstance(value, str) and value != "")
        or (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value))
        or (isinstance(value, list) and value and all(is_int(v) for v in value))
        or (
            isinstance(value, list)
            and value
            and all(isinstance(v, list) and v and all(is_int(t) for t in v) for v in value)
        )
    )
    if not ok:
        raise bad_request(
            "input must be a non-empty string, array of strings, or array of token arrays", "input"
        )
    if isinstance(value, list) and len(value) > 2048:
        raise bad_request(f"input allows at most 2048 items, got {len(value)}", "input")
    if body.get("encoding_format") is not None:
        enum(body["encoding_format"], _ENCODINGS, "encoding_format")
    _positive_int(body, "dimensions")
    string(body, "user", "user")
    return body


def error_for_unknown_model(model: str, known: list[str]) -> ApiError:
    listing = ", ".join(known) if known else "none: no config is loaded"
    return ApiError(
        404,
        f"The model {model!r} does not exist here. Known models: {listing}",
        param="model",
        code="model_not_found",
    )
