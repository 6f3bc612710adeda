"""Hypothesis strategies for request bodies an app might send, well-formed or not.

Two generators, both used by ``tests/unit/test_openai_input_fuzz.py`` (the pure readers) and by this
tier's ``test_policy_fuzz.py`` (a real sidecar):

- structure-aware: :func:`chat_requests` and :func:`embedding_requests` build bodies that look like
  real ones (messages of every role, content parts of every type with their fields, tool calls,
  tools, tool_choice, response_format, sampling fields), then apply up to a few mutations, each of
  which walks to a random place at any depth and replaces the value there with any JSON value, drops
  a key, or adds a known or unknown one. So most bodies are wrong in one place, deep inside, which is
  where type confusions hide (a role that is a list, an ``image_url`` that is a string);
- any field, any type: :data:`JSON` for whole top-level fields, as the first version of this tier did.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

__all__ = ["CHAT_FIELDS", "EMBEDDING_FIELDS", "JSON", "chat_requests", "embedding_requests", "nested"]

# Words the readers compare against, so that mutated values hit the branches that look at them.
_WORDS = [
    "", " ", "user", "assistant", "system", "developer", "tool", "function", "text", "image_url",
    "input_audio", "file", "refusal", "auto", "none", "required", "json_object", "json_schema",
    "low", "high", "wav", "mp3", "float", "base64", "call_1", "get_weather", '{"city": "Paris"}',
    "{", "[1]", "null", "data:image/png;base64,iVBORw0KGgo=", "data:application/pdf;base64,JVBERi0=",
    "data:text/plain;base64,aGk=", "data:image/tiff;base64,AAAA", "data:,x", "data:image/png,raw",
    "https://example.com/cat.png?x=1", "http://example.com/doc", "s3://bucket/cat.png",
    "s3://bucket/cat.bmp", "gs://bucket/doc.pdf", "ftp://x", "ann@example.org",
    "call me on +1 415 555 0100", "4111 1111 1111 1111", "def f():\n    return 1 {", "prove x^2 >= 0",
    # JSON text nested past what orjson encodes: tool arguments and results the adapters decode.
    '{"a": ' + "[" * 300 + "]" * 300 + "}",
]  # fmt: skip
TEXT = st.text(max_size=24) | st.sampled_from(_WORDS)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)


def nested(depth: int) -> Any:
    """A list nested ``depth`` deep: deeper than the JSON encoders' limits when ``depth`` > 254."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# Nested past what orjson encodes (254 levels) or decodes (1024).
DEEP = st.sampled_from([255, 300, 1100]).map(nested)

_NAME = st.sampled_from(["get_weather", "lookup", "a.b-c_d", "f"])
_ID = st.sampled_from(["call_1", "call_2", "toolu_01", "id with spaces"])
_ARGUMENTS = st.sampled_from(['{"city": "Paris"}', "{}", "", "[1, 2]", "{bad"]) | TEXT
_URL = st.sampled_from([w for w in _WORDS if ":" in w])
_SCHEMA = st.sampled_from(
    [
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        {},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
    ]
)


def _part(kind: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(kind), **fields})


_TEXT_PART = _part("text", text=TEXT)
_REFUSAL_PART = _part("refusal", refusal=TEXT)
_IMAGE_PART = _part(
    "image_url",
    image_url=st.fixed_dictionaries(
        {"url": _URL}, optional={"detail": st.sampled_from(["auto", "low", "high", "medium"])}
    ),
)
_AUDIO_PART = _part(
    "input_audio",
    input_audio=st.fixed_dictionaries(
        {"data": st.just("UklGRiQAAABXQVZF"), "format": st.sampled_from(["wav", "mp3", "ogg"])}
    ),
)
_FILE_PART = _part(
    "file",
    file=st.fixed_dictionaries(
        {}, optional={"file_data": _URL, "filename": st.sampled_from(["a.pdf", "", "notes"]), "file_id": _ID}
    ),
)
_USER_PART = st.one_of(_TEXT_PART, _IMAGE_PART, _AUDIO_PART, _FILE_PART)
_TOOL_CALL = st.fixed_dictionaries(
    {
        "id": _ID,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": _NAME, "arguments": _ARGUMENTS}),
    },
    optional={
        "extra_content": st.fixed_dictionaries({"google": st.fixed_dictionaries({"thought_signature": TEXT})})
    },
)
_OPTIONAL_NAME = {"name": st.sampled_from(["ann", "bot-1", ""])}
_MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer"]),
            "content": TEXT | st.lists(_TEXT_PART, max_size=2),
        },
        optional=_OPTIONAL_NAME,
    ),
    st.fixed_dictionaries(
        {"role": st.just("user"), "content": TEXT | st.lists(_USER_PART, min_size=1, max_size=3)},
        optional=_OPTIONAL_NAME,
    ),
    st.fixed_dictionaries(
        {
            "role": st.just("assistant"),
            "content": st.none() | TEXT | st.lists(_TEXT_PART | _REFUSAL_PART, max_size=2),
        },
        optional={
            "tool_calls": st.lists(_TOOL_CALL, min_size=1, max_size=2),
            "refusal": st.none() | TEXT,
            "function_call": st.fixed_dictionaries({"name": _NAME, "arguments": _ARGUMENTS}),
            **_OPTIONAL_NAME,
        },
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "tool_call_id": _ID, "content": TEXT | st.lists(_TEXT_PART, max_size=2)}
    ),
    st.fixed_dictionaries({"role": st.just("function"), "name": _NAME, "content": TEXT}),
)
_TOOL = st.fixed_dictionaries(
    {"type": st.just("function"), "function": st.fixed_dictionaries(
        {"name": _NAME},
        optional={"description": TEXT, "parameters": _SCHEMA, "strict": st.booleans()},
    )},
)  # fmt: skip
_TOOL_CHOICE = st.sampled_from(["none", "auto", "required"]) | st.fixed_dictionaries(
    {"type": st.just("function"), "function": st.fixed_dictionaries({"name": _NAME})}
)
_RESPONSE_FORMAT = st.one_of(
    st.just({"type": "text"}),
    st.just({"type": "json_object"}),
    st.fixed_dictionaries(
        {"type": st.just("json_schema"), "json_schema": st.fixed_dictionaries(
            {"name": st.sampled_from(["answer", ""])},
            optional={"schema": _SCHEMA, "strict": st.booleans(), "description": TEXT},
        )},
    ),
)  # fmt: skip
_CHAT_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.booleans(),
    "temperature": st.sampled_from([0, 0.0, 0.7, 1, 2]),
    "top_p": st.sampled_from([0.1, 1]),
    "max_tokens": st.integers(1, 4096),
    "max_completion_tokens": st.integers(1, 4096),
    "presence_penalty": st.sampled_from([-2, 0, 1.5]),
    "frequency_penalty": st.sampled_from([-2, 0, 1.5]),
    "n": st.just(1),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "user": st.sampled_from(["ann", "bob", ""]),
    "stop": TEXT | st.lists(TEXT, max_size=4),
    "tools": st.lists(_TOOL, max_size=3),
    "tool_choice": _TOOL_CHOICE,
    "response_format": _RESPONSE_FORMAT,
    "parallel_tool_calls": st.booleans(),
    "metadata": st.dictionaries(st.sampled_from(["k", "team"]), TEXT, max_size=2),
    "logit_bias": st.dictionaries(st.sampled_from(["50256", "1"]), st.integers(-100, 100), max_size=2),
    "modalities": st.sampled_from([["text"], ["text", "audio"]]),
    "logprobs": st.booleans(),
}
CHAT_FIELDS = ["model", "messages", *_CHAT_OPTIONAL, "stream_options"]
EMBEDDING_FIELDS = ["model", "input", "encoding_format", "dimensions", "user"]
# Keys a mutation may add: every key some reader looks at, at any level, and now and then a new one.
_KEYS = st.sampled_from(
    sorted(
        {*CHAT_FIELDS, *EMBEDDING_FIELDS, "role", "content", "name", "tool_calls", "tool_call_id",
         "function_call", "refusal", "type", "text", "image_url", "url", "detail", "input_audio", "data",
         "format", "file", "file_data", "filename", "id", "function", "arguments", "parameters",
         "description", "strict", "json_schema", "schema", "include_usage", "extra_content", "functions"}
    )
) | TEXT  # fmt: skip


@st.composite
def _chat_base(draw: st.DrawFn, *, stream: bool | None = None) -> dict[str, Any]:
    body: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"model": st.just("chat"), "messages": st.lists(_MESSAGE, min_size=1, max_size=5)},
            optional=_CHAT_OPTIONAL,
        )
    )
    if stream is not None:
        body["stream"] = stream
    if body.get("stream") and draw(st.booleans()):
        body["stream_options"] = {"include_usage": draw(st.booleans())}
    return body


def _any(draw: st.DrawFn) -> Any:
    # One in twenty is too deep. (Not 0: Hypothesis draws the bounds of a range more often.)
    return draw(DEEP) if draw(st.integers(0, 19)) == 7 else draw(JSON)


def _mutate(draw: st.DrawFn, value: Any, *, top: bool = False) -> Any:
    """``value`` with one change somewhere inside it; containers on the way are copied. The body
    itself (``top``) is never replaced: a body that is not an object is a different, shallow test."""
    if top and value:
        action = draw(st.sampled_from(["descend", "descend", "descend", "drop", "add"]))
    elif top:
        action = "add"
    elif (isinstance(value, dict) and value) or (isinstance(value, list) and value):
        action = draw(st.sampled_from(["descend", "descend", "descend", "drop", "add", "replace"]))
    elif isinstance(value, dict):
        action = draw(st.sampled_from(["add", "replace"]))
    else:
        action = "replace"
    if action == "replace":
        return _any(draw)
    if isinstance(value, dict):
        if action == "add":
            return {**value, draw(_KEYS): _any(draw)}
        key = draw(st.sampled_from(sorted(value)))
        if action == "drop":
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: _mutate(draw, value[key])}
    assert isinstance(value, list)
    if action == "add":
        return [*value, _any(draw)]
    index = draw(st.integers(0, len(value) - 1))
    if action == "drop":
        return value[:index] + value[index + 1 :]
    return [*value[:index], _mutate(draw, value[index]), *value[index + 1 :]]


@st.composite
def _mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> Any:
    body = draw(base)
    # Mostly one or two wrong values; some bodies stay as built so the valid paths run too.
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3]))):
        body = _mutate(draw, body, top=True)
    return body


def chat_requests(*, stream: bool | None = None) -> st.SearchStrategy[Any]:
    """Chat-completions bodies, structure-aware, with a few mutations at any depth (``stream`` forces
    the ``stream`` field before mutating, so a mutation may still break it)."""
    return _mutated(_chat_base(stream=stream))


_EMBEDDING_BASE = st.fixed_dictionaries(
    {
        "model": st.just("embed"),
        "input": TEXT.filter(bool)
        | st.lists(TEXT.filter(bool), min_size=1, max_size=3)
        | st.lists(st.integers(0, 100_000), min_size=1, max_size=5)
        | st.lists(st.lists(st.integers(0, 100_000), min_size=1, max_size=3), min_size=1, max_size=2),
    },
    optional={
        "encoding_format": st.sampled_from(["float", "base64"]),
        "dimensions": st.integers(1, 4096),
        "user": st.sampled_from(["ann", ""]),
    },
)


def embedding_requests() -> st.SearchStrategy[Any]:
    """Embeddings bodies: text, texts or token arrays, with a few mutations at any depth."""
    return _mutated(_EMBEDDING_BASE)
