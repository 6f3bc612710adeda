"""Checks of one chat message and its content parts, and the typed helpers every check uses.

``validate.py`` calls :func:`check_message` for each of ``messages``; the helpers here
(:func:`enum`, :func:`string`, :func:`type_name`) are shared with it. Each field a reader downstream
looks at is type-checked here: the role and a part's type (through :func:`enum`, which checks for a
string before looking the value up), the fields of each part type (``text``, ``refusal``,
``image_url.url``/``detail``, ``input_audio.data``/``format``, ``file.file_data``/``file_id``/
``filename``), ``name``, ``tool_call_id``, ``refusal``, ``tool_calls`` and the legacy
``function_call``. The translating adapters (``adapters/anthropic.py``, ``google.py``, ``bedrock.py``,
``cohere.py``) read exactly these.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .errors import bad_request

__all__ = ["Json", "check_message", "enum", "is_int", "is_number", "string", "type_name"]

Json = dict[str, Any]

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
_DETAILS = ("auto", "low", "high")
_TYPE_NAMES: dict[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    type(None): "null",
}


def type_name(value: Any) -> str:
    """How an error message names the JSON type of ``value``: "an array", "null", "a number"..."""
    return _TYPE_NAMES.get(type(value), "a number")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def enum(value: Any, allowed: Collection[str], where: str) -> str:
    """``value`` if it is one of the strings ``allowed``; else a 400 naming ``where``.

    The string check comes first: an array or object is unhashable (a set lookup raises) and would
    only ever compare unequal, and the message should say what it was rather than print it."""
    if not isinstance(value, str):
        code = "missing_required_parameter" if value is None else "invalid_type"
        raise bad_request(f"{where} must be one of {', '.join(allowed)}, not {type_name(value)}", where, code)
    if value not in allowed:
        raise bad_request(f"{where} must be one of {', '.join(allowed)}, got {value!r}", where)
    return value


def string(container: Json, key: str, where: str, *, required: bool = False) -> str | None:
    """``container[key]`` if it is a string (or absent or null when not ``required``); else a 400."""
    value = container.get(key)
    if isinstance(value, str):
        return value
    if value is None and not required:
        return None
    if value is None:
        raise bad_request(f"{where} is required", where, "missing_required_parameter")
    raise bad_request(f"{where} must be a string, not {type_name(value)}", where, "invalid_type")


def _object(container: Json, key: str, where: str) -> Json:
    value = container.get(key)
    if not isinstance(value, dict):
        code = "missing_required_parameter" if value is None else "invalid_type"
        raise bad_request(f"{where} must be an object, not {type_name(value)}", where, code)
    return value


def check_message(message: Any, where: str) -> None:
    """Check ``messages[i]`` (``where`` is that path)."""
    if not isinstance(message, dict):
        raise bad_request(f"{where} must be an object, not {type_name(message)}", where, "invalid_type")
    role = message.get("role")
    if role is None:
        raise bad_request(f"{where}.role is required", f"{where}.role", "missing_required_parameter")
    enum(role, ROLES, f"{where}.role")
    content = message.get("content")
    if content is None:
        if role != "assistant" or not (
            message.get("tool_calls") or message.get("function_call") or "content" in message
        ):
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
            f"{where}.content must be a string or an array of parts, not {type_name(content)}",
            f"{where}.content",
            "invalid_type",
        )
    string(message, "name", f"{where}.name", required=role == "function")
    string(message, "refusal", f"{where}.refusal")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise bad_request(
            f"{where}.tool_call_id is required for role tool",
            f"{where}.tool_call_id",
            "missing_required_parameter",
        )
    string(message, "tool_call_id", f"{where}.tool_call_id")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if role != "assistant" or not isinstance(tool_calls, list):
            raise bad_request(
                f"{where}.tool_calls must be an array on an assistant message",
                f"{where}.tool_calls",
                "invalid_type",
            )
        for index, call in enumerate(tool_calls):
            _tool_call(call, f"{where}.tool_calls[{index}]")
    legacy = message.get("function_call")
    if legacy is not None:
        path = f"{where}.function_call"
        if not isinstance(legacy, dict):
            raise bad_request(f"{path} must be an object, not {type_name(legacy)}", path, "invalid_type")
        string(legacy, "name", f"{path}.name", required=True)
        string(legacy, "arguments", f"{path}.arguments", required=True)


def _tool_call(call: Any, path: str) -> None:
    if (
        not isinstance(call, dict)
        or not isinstance(call.get("id"), str)
        or not isinstance(call.get("function"), dict)
    ):
        raise bad_request(f"{path} must have an id and a function", path)
    kind = call.get("type")
    if kind is not None:
        enum(kind, ("function",), f"{path}.type")
    function = call["function"]
    if not isinstance(function.get("name"), str) or not isinstance(function.get("arguments"), str):
        raise bad_request(f"{path}.function needs a name and arguments (a JSON string)", f"{path}.function")


def _part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise bad_request(f"{where} must be an object, not {type_name(part)}", where, "invalid_type")
    kind = enum(part.get("type"), PART_TYPES, f"{where}.type")
    if kind == "text" or kind == "refusal":
        if not isinstance(part.get(kind), str):
            raise bad_request(
                f"{where}.{kind} must be a string, not {type_name(part.get(kind))}",
                f"{where}.{kind}",
                "invalid_type",
            )
    elif kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}.image_url.url must be a URL or a data: URI", f"{where}.image_url.url")
        assert isinstance(image, dict)
        if image.get("detail") is not None:
            enum(image["detail"], _DETAILS, f"{where}.image_url.detail")
    elif kind == "input_audio":
        audio = _object(part, "input_audio", f"{where}.input_audio")
        string(audio, "data", f"{where}.input_audio.data", required=True)
        string(audio, "format", f"{where}.input_audio.format", required=True)
    else:  # file
        file = _object(part, "file", f"{where}.file")
        for key in ("file_data", "file_id", "filename"):
            string(file, key, f"{where}.file.{key}")
