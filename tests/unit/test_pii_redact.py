"""Redaction and restoring: no original value survives in the body sent upstream, the input is
never mutated, restoring round-trips for whole responses and for streams split anywhere, and no
JSON shape makes any of it raise."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_sidecar.pii import PII_TYPES, Redaction, redact_chat, redact_texts, scan_chat
from llmroute_sidecar.pii.chat import prompt_texts

ALL = frozenset(PII_TYPES)
VALUES = {
    "email": "jane.doe@example.com",
    "phone": "+1 (415) 555-0132",
    "credit_card": "4111 1111 1111 1111",
    "ssn": "123-45-6789",
    "iban": "DE89 3704 0044 0532 0130 00",
    "ip": "192.168.1.20",
}


def chat_body() -> dict[str, Any]:
    return {
        "model": "chat",
        "messages": [
            {"role": "system", "content": "Help the user. Never reveal <EMAIL_1> literally."},
            {"role": "user", "name": "jane", "content": f"I am {VALUES['email']}, call {VALUES['phone']}."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"card {VALUES['credit_card']} ssn {VALUES['ssn']}"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "text", "text": f"again {VALUES['email']}"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "pay",
                            "arguments": orjson.dumps({"iban": VALUES["iban"], "ip": VALUES["ip"]}).decode(),
                        },
                    }
                ],
            },
        ],
    }


def test_redaction_leaves_no_original_value() -> None:
    body = chat_body()
    new_body, redaction = redact_chat(body, ALL)
    sent = orjson.dumps(new_body).decode()
    for value in VALUES.values():
        assert value not in sent
    assert "<EMAIL_" in sent
    assert "<CREDIT_CARD_1>" in sent
    # Other fields (the image URL, the name) are not prompt text and stay as they were.
    assert "https://example.com/cat.png" in sent
    assert new_body["messages"][1]["name"] == "jane"
    assert bool(redaction)


def test_input_body_is_not_mutated() -> None:
    body = chat_body()
    before = copy.deepcopy(body)
    redact_chat(body, ALL)
    assert body == before


def test_counts_and_same_value_same_placeholder() -> None:
    new_body, redaction = redact_chat(chat_body(), ALL)
    assert redaction.counts == Counter(email=2, phone=1, credit_card=1, ssn=1, iban=1, ip=1)
    assert scan_chat(chat_body(), ALL) == redaction.counts
    first = new_body["messages"][1]["content"]
    again = new_body["messages"][2]["content"][2]["text"]
    # The system prompt already contains "<EMAIL_1>", so the address gets the next number.
    assert first.startswith("I am <EMAIL_2>, call <PHONE_1>.")
    assert again == "again <EMAIL_2>"
    assert "<EMAIL_1>" not in redaction.originals
    assert redaction.restore_text("<EMAIL_1> and <EMAIL_2>") == f"<EMAIL_1> and {VALUES['email']}"


def test_repr_shows_counts_not_values() -> None:
    _, redaction = redact_chat(chat_body(), ALL)
    assert "jane.doe" not in repr(redaction)
    assert "4111" not in repr(redaction)


def test_nothing_to_redact_returns_the_same_body() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
    new_body, redaction = redact_chat(body, ALL)
    assert new_body is body
    assert not redaction
    assert redaction.counts == Counter()


def test_restore_response_content_and_tool_arguments() -> None:
    new_body, redaction = redact_chat(chat_body(), ALL)
    arguments = new_body["messages"][3]["tool_calls"][0]["function"]["arguments"]
    response = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Mailed <EMAIL_2>; card <CREDIT_CARD_1> ok. <IP_9> unknown.",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "pay", "arguments": arguments}}
                    ],
                },
                "finish_reason": "stop",
            }
        ],
    }
    before = copy.deepcopy(response)
    restored = redaction.restore_response(response)
    assert response == before
    message = restored["choices"][0]["message"]
    assert message["content"] == f"Mailed {VALUES['email']}; card {VALUES['credit_card']} ok. <IP_9> unknown."
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {
        "iban": VALUES["iban"],
        "ip": VALUES["ip"],
    }
    unchanged = {"choices": [{"message": {"content": "nothing here"}}]}
    assert redaction.restore_response(unchanged) is unchanged


def test_redact_texts_shares_one_table() -> None:
    texts = [f"a {VALUES['email']}", f"b {VALUES['email']} {VALUES['ssn']}", "c"]
    redacted, redaction = redact_texts(texts, ALL)
    assert redacted == ["a <EMAIL_1>", "b <EMAIL_1> <SSN_1>", "c"]
    assert redaction.counts == Counter(email=2, ssn=1)
    assert [redaction.restore_text(text) for text in redacted] == texts


# Text with PII embedded between arbitrary filler.
filler = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="<>"), max_size=20
) | st.sampled_from(["", " ", "<", "<E", "<EMAIL_", ">", "\n", "<EMAIL_99>", "x"])
texts_with_pii = st.lists(
    st.tuples(filler, st.sampled_from(sorted(VALUES.values()))), min_size=1, max_size=6
).map(lambda pairs: "".join(pad + " " + value + " " for pad, value in pairs))


@settings(max_examples=200, deadline=None)
@given(text=texts_with_pii)
def test_restore_text_round_trips(text: str) -> None:
    [redacted], redaction = redact_texts([text], ALL)
    for value in VALUES.values():
        if value in text:
            assert value not in redacted
    assert redaction.restore_text(redacted) == text


def _chunk(content: str | None, finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": index, "delta": {"content": content}, "finish_reason": finish}],
    }


def _contents(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["index"] == index
    )


@settings(max_examples=300, deadline=None)
@given(text=texts_with_pii, echo=filler, data=st.data())
def test_stream_split_anywhere_restores_like_the_whole(text: str, echo: str, data: st.DataObject) -> None:
    [redacted], redaction = redact_texts([text], ALL)
    model_output = echo + redacted + echo
    cuts = sorted(data.draw(st.lists(st.integers(0, len(model_output)), max_size=12)))
    pieces = [model_output[a:b] for a, b in zip([0, *cuts], [*cuts, len(model_output)], strict=True)]
    restorer = redaction.stream_restorer()
    out = [restorer.feed(_chunk(piece)) for piece in pieces]
    if data.draw(st.booleans()):
        out.append(restorer.feed(_chunk(None, finish="stop")))
    out.extend(restorer.flush())
    assert _contents(out) == redaction.restore_text(model_output)
    assert restorer.flush() == []


def test_split_placeholder_is_held_until_complete() -> None:
    _, redaction = redact_texts([VALUES["email"]], ALL)
    restorer = redaction.stream_restorer()
    first = restorer.feed(_chunk("Hi <EMA"))
    assert first["choices"][0]["delta"]["content"] == "Hi "
    second = restorer.feed(_chunk("IL_1>!"))
    assert second["choices"][0]["delta"]["content"] == f"{VALUES['email']}!"


def test_held_text_released_at_finish_reason_and_per_choice() -> None:
    _, redaction = redact_texts([VALUES["email"]], ALL)
    restorer = redaction.stream_restorer()
    restorer.feed(_chunk("a <EMAIL", index=0))
    restorer.feed(_chunk("b <", index=1))
    final = restorer.feed(_chunk(None, finish="stop", index=0))
    assert final["choices"][0]["delta"]["content"] == "<EMAIL"
    [flushed] = restorer.flush()
    assert flushed["choices"] == [{"index": 1, "delta": {"content": "<"}, "finish_reason": None}]
    assert flushed["id"] == "chatcmpl-1"
    assert flushed["object"] == "chat.completion.chunk"


def test_stream_tool_call_arguments_are_restored() -> None:
    _, redaction = redact_texts([VALUES["ssn"]], ALL)
    restorer = redaction.stream_restorer()

    def call_chunk(arguments: str, finish: str | None = None) -> dict[str, Any]:
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [restorer.feed(call_chunk('{"ssn": "<SS')), restorer.feed(call_chunk('N_1>"}'))]
    arguments = "".join(
        chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for chunk in out
    )
    assert orjson.loads(arguments) == {"ssn": VALUES["ssn"]}


def test_nothing_redacted_passes_chunks_through() -> None:
    restorer = Redaction().stream_restorer()
    chunk = _chunk("<EMA")
    assert restorer.feed(chunk) is chunk
    assert restorer.flush() == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(list(VALUES.values())),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["role", "content", "type", "text", "tool_calls", "function", "arguments", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
weird_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"messages": json_values}),
    st.fixed_dictionaries({"messages": st.lists(json_values, max_size=4)}),
    st.fixed_dictionaries({"choices": st.lists(json_values, max_size=3)}),
)


@settings(max_examples=400, deadline=None)
@given(body=weird_bodies)
def test_weird_json_never_raises(body: Any) -> None:
    before = copy.deepcopy(body)
    scan_chat(body, ALL)
    new_body, redaction = redact_chat(body, ALL)
    assert body == before
    # Values elsewhere (a bare string where a message should be) are not prompt text; those in
    # prompt text are gone.
    orjson.dumps(new_body)
    texts = prompt_texts(new_body)
    assert not any(value in text for text in texts for value in redaction.originals.values())
    redaction.restore_response(body)
    restorer = redaction.stream_restorer()
    restorer.feed(body)
    restorer.flush()
    _, with_table = redact_texts([VALUES["email"]], ALL)
    with_table.restore_response(body)
    streamer = with_table.stream_restorer()
    streamer.feed(body)
    streamer.flush()
