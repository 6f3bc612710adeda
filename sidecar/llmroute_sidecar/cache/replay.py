"""Cached answers as streams and streams as cacheable answers.

Pure functions, no I/O. The cache stores one form, the full ``chat.completion``: a hit for a streaming
request is replayed with :func:`replay_chunks` (what the HTTP and gRPC fronts then send as SSE or
``ChatChunk``), and a streamed answer is stored after :func:`assemble_response` rebuilds it from the
chunks the app was sent. :func:`cacheable` is the rule for both: never an error, never an answer whose
choices did not all finish.
"""

from __future__ import annotations

from typing import Any

__all__ = ["assemble_response", "cacheable", "replay_chunks"]

Json = dict[str, Any]

#: Characters per replayed content chunk: small enough that a replay still looks like a stream to
#: the app (progressive rendering works), large enough that a long answer is not thousands of events.
PIECE_CHARS = 64
# Fields of the message streamed as text deltas, in the order OpenAI-compatible servers send them.
_TEXT_FIELDS = ("reasoning_content", "content", "refusal")
# Fields copied from the response onto every chunk when present.
_ENVELOPE = ("id", "created", "model", "system_fingerprint", "service_tier")


def cacheable(response: Any) -> bool:
    """A ``chat.completion`` with at least one choice, every choice finished, and no error."""
    if not isinstance(response, dict) or "error" in response:
        return False
    if response.get("object", "chat.completion") != "chat.completion":
        return False
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(
        isinstance(choice, dict)
        and isinstance(choice.get("finish_reason"), str)
        and bool(choice["finish_reason"])
        and isinstance(choice.get("message"), dict)
        for choice in choices
    )


def replay_chunks(response: Json, *, include_usage: bool, piece_chars: int = PIECE_CHARS) -> list[Json]:
    """The ``chat.completion.chunk`` dicts of ``response`` (``[DONE]`` is the caller's): per choice, a
    role delta, the text in pieces, each tool call (id and name, then its arguments in pieces), and a
    finish chunk carrying the choice's logprobs. With ``include_usage``, every chunk has
    ``"usage": null`` and a last chunk with ``choices: []`` carries the usage, as OpenAI does."""
    envelope: Json = {"object": "chat.completion.chunk"}
    for field in _ENVELOPE:
        if field in response:
            envelope[field] = response[field]
    if include_usage:
        envelope["usage"] = None

    def chunk(index: int, delta: Json, finish_reason: str | None = None, logprobs: Any = None) -> Json:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return {**envelope, "choices": [choice]}

    chunks: list[Json] = []
    for position, choice in enumerate(response.get("choices") or []):
        index = choice.get("index", position)
        message = choice.get("message") or {}
        # Content "" (not null) in the role chunk, as OpenAI sends it, unless the answer has none.
        opening = "" if isinstance(message.get("content"), str) else None
        chunks.append(chunk(index, {"role": message.get("role", "assistant"), "content": opening}))
        for field in _TEXT_FIELDS:
            text = message.get(field)
            if isinstance(text, str) and text:
                chunks.extend(chunk(index, {field: piece}) for piece in _pieces(text, piece_chars))
        for call_index, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            head: Json = {
                "index": call_index,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name"), "arguments": ""},
            }
            chunks.append(chunk(index, {"tool_calls": [head]}))
            for piece in _pieces(function.get("arguments") or "", piece_chars):
                chunks.append(
                    chunk(index, {"tool_calls": [{"index": call_index, "function": {"arguments": piece}}]})
                )
        chunks.append(chunk(index, {}, choice.get("finish_reason"), choice.get("logprobs")))
    usage = response.get("usage")
    if include_usage and isinstance(usage, dict):
        chunks.append({**envelope, "choices": [], "usage": usage})
    return chunks


def assemble_response(chunks: list[Json]) -> Json | None:
    """The ``chat.completion`` the chunks spell, or ``None`` when the stream is incomplete (a choice
    without ``finish_reason``, or no choice at all) or not a chat stream."""
    head: Json = {}
    choices: dict[int, Json] = {}
    usage: Any = None
    for item in chunks:
        if not isinstance(item, dict):
            return None
        # Azure's first chunk (prompt filter results) has an empty object, id and model: skip it.
        if item.get("object") == "chat.completion.chunk":
            for field in _ENVELOPE:
                if item.get(field) is not None and field not in head:
                    head[field] = item[field]
        if isinstance(item.get("usage"), dict):
            usage = item["usage"]
        for choice in item.get("choices") or []:
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                return None
            if not _absorb(choices.setdefault(choice.get("index", 0), {"texts": {}, "calls": {}}), choice):
                return None
    if not choices or any(not state.get("finish_reason") for state in choices.values()):
        return None
    response: Json = {"id": head.get("id"), "object": "chat.completion", "created": head.get("created")}
    response["model"] = head.get("model")
    response["choices"] = [_choice(index, choices[index]) for index in sorted(choices)]
    for field in ("system_fingerprint", "service_tier"):
        if field in head:
            response[field] = head[field]
    response["usage"] = usage
    return response


def _absorb(state: Json, choice: Json) -> bool:
    """Fold one chunk's choice into the accumulated state; ``False`` when it is malformed."""
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        return False
    if isinstance(delta.get("role"), str):
        state["role"] = delta["role"]
    for field in _TEXT_FIELDS:
        if isinstance(delta.get(field), str):
            state["texts"].setdefault(field, []).append(delta[field])
    for call in delta.get("tool_calls") or []:
        if not isinstance(call, dict) or not isinstance(call.get("index", 0), int):
            return False
        slot = state["calls"].setdefault(call.get("index", 0), {"name": [], "arguments": []})
        for field in ("id", "type"):
            if call.get(field):
                slot[field] = call[field]
        function = call.get("function") or {}
        if not isinstance(function, dict):
            return False
        for field in ("name", "arguments"):
            if isinstance(function.get(field), str):
                slot[field].append(function[field])
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        merged = state.setdefault("logprobs", {})
        for field, values in logprobs.items():
            if isinstance(values, list):
                merged.setdefault(field, []).extend(values)
            else:
                merged.setdefault(field, values)
    if choice.get("finish_reason"):
        state["finish_reason"] = choice["finish_reason"]
    return True


def _choice(index: int, state: Json) -> Json:
    texts = state["texts"]
    message: Json = {
        "role": state.get("role", "assistant"),
        "content": "".join(texts["content"]) if "content" in texts else None,
    }
    message["refusal"] = "".join(texts["refusal"]) if "refusal" in texts else None
    if "reasoning_content" in texts:
        message["reasoning_content"] = "".join(texts["reasoning_content"])
    if state["calls"]:
        message["tool_calls"] = [
            {
                "id": slot.get("id"),
                "type": slot.get("type", "function"),
                "function": {"name": "".join(slot["name"]), "arguments": "".join(slot["arguments"])},
            }
            for _, slot in sorted(state["calls"].items())
        ]
    return {
        "index": index,
        "message": message,
        "logprobs": state.get("logprobs"),
        "finish_reason": state["finish_reason"],
    }


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[start : start + size] for start in range(0, len(text), size)]
