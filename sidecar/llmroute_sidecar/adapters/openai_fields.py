"""Reading the fields of an OpenAI chat request that translating adapters need.

The HTTP front has already validated the request (``openai_api/validate.py``), so these helpers only
normalise: the output-token limit under either name, ``stop`` as a list, the text of a content that may
be a string or a list of parts, ``data:`` URIs, and tool-call arguments as an object. Anything a
provider cannot express becomes a BAD_REQUEST :class:`ProviderError` naming the field. Used by the
translating adapters (``anthropic.py``, ``cohere.py``, ``google.py``, ``bedrock.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ErrorKind, ProviderError

__all__ = [
    "DataUri",
    "as_object",
    "content_text",
    "json_instruction",
    "max_output_tokens",
    "parse_data_uri",
    "stop_list",
    "tool_arguments",
    "unsupported",
]

Json = dict[str, Any]


def as_object(value: Any) -> Json:
    """``value`` if it is a JSON object, else an empty one: for reading optional nested fields."""
    return value if isinstance(value, dict) else {}


def unsupported(provider: str, what: str) -> ProviderError:
    """The error for a request feature ``provider`` cannot serve."""
    return ProviderError(ErrorKind.BAD_REQUEST, f"{provider} does not support {what}", provider=provider)


def max_output_tokens(body: Json, default: int | None = None) -> int | None:
    """``max_completion_tokens`` (the current name) or ``max_tokens`` (the legacy one), else ``default``."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def stop_list(body: Json) -> list[str]:
    """``stop`` as a list (OpenAI takes a string or up to four strings)."""
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str)]
    return []


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the ``text``/``refusal`` parts of a list, joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    pieces: list[str] = []
    for part in content:
        if isinstance(part, dict):
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str):
                pieces.append(text)
    return "".join(pieces)


@dataclass(frozen=True)
class DataUri:
    media_type: str
    data: str  # base64, as it was in the URI


def parse_data_uri(url: str) -> DataUri | None:
    """``data:<media type>;base64,<data>`` split into its parts; None for anything else."""
    if not url.startswith("data:"):
        return None
    head, comma, data = url[5:].partition(",")
    params = head.split(";")
    if not comma or "base64" not in params[1:]:
        return None
    return DataUri(media_type=params[0].lower() or "application/octet-stream", data=data)


def tool_arguments(arguments: Any, provider: str) -> Json:
    """A tool call's ``arguments`` (OpenAI sends a JSON string) as the object providers want."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        raise ProviderError(
            ErrorKind.BAD_REQUEST,
            f"tool call arguments are not valid JSON, which {provider} needs: {str(arguments)[:80]!r}",
            provider=provider,
        ) from None
    if not isinstance(parsed, dict):
        raise ProviderError(
            ErrorKind.BAD_REQUEST,
            f"{provider} needs tool call arguments to be a JSON object",
            provider=provider,
        )
    return parsed


def json_instruction(response_format: Any) -> str:
    """A system instruction asking for JSON, for providers without a JSON mode ("" when none is asked).

    This is an emulation: the model is told, not constrained, so the app should still validate.
    """
    if not isinstance(response_format, dict):
        return ""
    kind = response_format.get("type")
    base = (
        "Answer with a single valid JSON object and nothing else: no text before or after it, and no "
        "Markdown code fences."
    )
    if kind == "json_object":
        return base
    if kind != "json_schema":
        return ""
    spec = response_format.get("json_schema")
    spec = spec if isinstance(spec, dict) else {}
    schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else {}
    name = spec.get("name")
    described = f' named "{name}"' if isinstance(name, str) and name else ""
    description = spec.get("description")
    about = f" ({description})" if isinstance(description, str) and description else ""
    return (
        f"{base} The object must conform to this JSON Schema{described}{about}:\n"
        f"{orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()}"
    )
