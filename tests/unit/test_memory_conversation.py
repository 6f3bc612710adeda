"""The pure half of conversation memory (``memory/conversation.py``): cuts keep what must stay."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from llmroute_sidecar.memory.conversation import (
    assistant_message,
    check_conversation_id,
    oldest_to_summarize,
    split_turn,
    window,
)

TURN = st.tuples(st.text(max_size=30), st.text(max_size=30)).map(
    lambda t: [{"role": "user", "content": t[0]}, {"role": "assistant", "content": t[1]}]
)
HISTORY = st.lists(TURN, max_size=12).map(lambda turns: [m for t in turns for m in t])


def _tokens(messages: list[Any]) -> list[int]:
    return [4 + len(str(m.get("content"))) // 4 for m in messages]


@given(history=HISTORY, budget=st.integers(0, 400), new=st.text(min_size=1, max_size=30))
def test_the_window_keeps_the_system_prompt_and_the_new_turn_and_counts_what_it_leaves_out(
    history: list[Any], budget: int, new: str
) -> None:
    system = {"role": "system", "content": "Be brief."}
    turn = {"role": "user", "content": new}
    full = [system, *history, turn]
    sent, left_out = window(full, _tokens(full), budget)
    assert sent[0] == system and sent[-1] == turn
    assert len(sent) + left_out == len(full)
    kept_history = sent[1:-1]
    assert kept_history == history[len(history) - len(kept_history) :]  # the newest, in order
    if left_out:
        assert sum(_tokens(sent)) <= budget or len(sent) == 2


@given(history=HISTORY, budget=st.integers(1, 400))
def test_a_summary_replaces_only_older_turns_and_cuts_before_a_user_message(
    history: list[Any], budget: int
) -> None:
    cut = oldest_to_summarize(history, _tokens(history), budget)
    assert 0 <= cut <= max(0, len(history) - 1)
    if 0 < cut < len(history) - 1:
        assert history[cut]["role"] == "user"


def test_the_turn_is_what_the_request_adds_and_ids_are_checked() -> None:
    pinned, turn = split_turn(
        [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "developer", "content": "d"},
        ]
    )
    assert pinned == [{"role": "system", "content": "s"}, {"role": "developer", "content": "d"}]
    assert turn == [{"role": "user", "content": "u"}]
    assert check_conversation_id("trip-42") is None
    for bad in ("", "a b", "é", "x" * 201, "tab\there"):
        assert check_conversation_id(bad) is not None
    answer = {"choices": [{"message": {"role": "assistant", "content": "hi", "tool_calls": [{"id": "1"}]}}]}
    assert assistant_message(answer) == {"role": "assistant", "content": "hi", "tool_calls": [{"id": "1"}]}
    assert assistant_message({"choices": "nope"}) is None
