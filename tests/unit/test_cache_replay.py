"""Replaying cached answers as streams and assembling streams into answers
(``llmroute_sidecar.cache.replay``): round trips for text and tool calls, usage chunks, and what is
never cacheable."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmroute_sidecar.cache import assemble_response, cacheable, replay_chunks


def response(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        **extra,
    }


TEXT = response(
    {"role": "assistant", "content": "The capital of France is Paris. " * 6, "refusal": None},
    system_fingerprint="fp_1",
)
TOOLS = response(
    {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "weather",
                    "arguments": '{"city": "Paris", "unit": "celsius", "days": 3, "hourly": false}',
                },
            },
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
        ],
    },
    finish="tool_calls",
)


@pytest.mark.parametrize("original", [TEXT, TOOLS], ids=["content", "tool_calls"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_replay_then_assemble_gives_the_answer_back(original: dict[str, Any], include_usage: bool) -> None:
    before = copy.deepcopy(original)
    chunks = replay_chunks(original, include_usage=include_usage)
    assert original == before
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1" for c in chunks)
    expected = original if include_usage else {**original, "usage": None}
    assert assemble_response(chunks) == expected


def test_chunks_look_like_openai_s() -> None:
    chunks = replay_chunks(TEXT, include_usage=True, piece_chars=50)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert len(pieces) == 4
    assert "".join(pieces) == TEXT["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == TEXT["usage"]
    assert all(c["usage"] is None and c["system_fingerprint"] == "fp_1" for c in chunks[:-1])
    assert "usage" not in replay_chunks(TEXT, include_usage=False)[0]


def test_tool_call_chunks_carry_id_and_name_first_then_arguments() -> None:
    chunks = replay_chunks(TOOLS, include_usage=False, piece_chars=16)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert deltas[1]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ""}}
    ]
    assert deltas[2]["tool_calls"] == [{"index": 0, "function": {"arguments": '{"city": "Paris"'}}]


def test_many_choices_and_logprobs_survive_the_round_trip() -> None:
    logprobs = {
        "content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}],
        "refusal": None,
    }
    original = response({"role": "assistant", "content": "Hi", "refusal": None})
    original["choices"][0]["logprobs"] = logprobs
    original["choices"].append(
        {
            "index": 1,
            "message": {"role": "assistant", "content": "Yo", "refusal": None},
            "logprobs": None,
            "finish_reason": "length",
        }
    )
    assert assemble_response(replay_chunks(original, include_usage=True)) == original


def test_an_incomplete_or_foreign_stream_assembles_to_none() -> None:
    chunks = replay_chunks(TEXT, include_usage=True)
    assert assemble_response(chunks[:-2]) is None  # cut before the finish chunk
    assert assemble_response([]) is None
    assert assemble_response([{"choices": [{"index": "x"}]}]) is None
    assert assemble_response(["garbage"]) is None  # type: ignore[list-item]


def test_azure_s_prompt_filter_chunk_does_not_blank_the_envelope() -> None:
    azure_first = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [],
    }
    assembled = assemble_response([azure_first, *replay_chunks(TEXT, include_usage=True)])
    assert assembled is not None
    assert (assembled["id"], assembled["created"], assembled["model"]) == (
        "chatcmpl-1",
        1700000000,
        "gpt-4o-mini",
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"error": {"message": "rate limited"}},
        {**TEXT, "choices": []},
        {**TEXT, "choices": [{"index": 0, "message": {"content": "par"}, "finish_reason": None}]},
        {**TEXT, "choices": [{"index": 0, "message": {"content": "par"}}]},
        {**TEXT, "object": "chat.completion.chunk"},
        "not a dict",
    ],
)
def test_errors_and_unfinished_answers_are_not_cacheable(bad: Any) -> None:
    assert not cacheable(bad)
    assert cacheable(TEXT)
    assert cacheable(TOOLS)
