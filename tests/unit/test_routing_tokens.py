"""Token estimation: text, per-message overhead, images, tools, output budget, embeddings."""

from __future__ import annotations

from llmroute_sidecar.routing import tokens


def test_ascii_text_is_about_four_characters_a_token() -> None:
    assert tokens.text_tokens("") == 0
    assert tokens.text_tokens("abcd") == 1
    assert tokens.text_tokens("abcde") == 2
    assert tokens.text_tokens("x" * 4000) == 1000


def test_multibyte_text_counts_more_tokens_per_character() -> None:
    cjk = "日本語のテキスト" * 100  # 800 characters, 3 bytes each
    assert tokens.text_tokens(cjk) == 600
    assert tokens.text_tokens(cjk) > tokens.text_tokens("a" * 800)


def test_messages_add_overhead_and_estimates_line_up_per_message() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "x" * 400},
        ]
    }
    estimate = tokens.estimate_chat(body)
    assert estimate.per_message == (tokens.MESSAGE_OVERHEAD + 2, tokens.MESSAGE_OVERHEAD + 100)
    assert estimate.input_tokens == tokens.REQUEST_OVERHEAD + sum(estimate.per_message)
    assert estimate.output_tokens == tokens.DEFAULT_OUTPUT_TOKENS
    assert estimate.total == estimate.input_tokens + estimate.output_tokens


def test_images_cost_a_fixed_amount_by_detail() -> None:
    def image(detail: str) -> dict[str, object]:
        return {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": detail}}

    high = tokens.message_tokens({"role": "user", "content": [{"type": "text", "text": "hi"}, image("high")]})
    low = tokens.message_tokens({"role": "user", "content": [image("low")]})
    assert high == tokens.MESSAGE_OVERHEAD + 1 + tokens.IMAGE_TOKENS
    assert low == tokens.MESSAGE_OVERHEAD + tokens.IMAGE_TOKENS_LOW


def test_tools_and_tool_calls_count_by_size() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "d" * 400,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    plain = tokens.estimate_chat({"messages": [{"role": "user", "content": "hi"}]})
    with_tools = tokens.estimate_chat({"messages": [{"role": "user", "content": "hi"}], "tools": [tool]})
    assert with_tools.input_tokens - plain.input_tokens > 100
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "a" * 80}}],
    }
    assert tokens.message_tokens(call) >= tokens.MESSAGE_OVERHEAD * 2 + 20


def test_output_budget_prefers_max_completion_tokens() -> None:
    assert tokens.output_budget({}) == tokens.DEFAULT_OUTPUT_TOKENS
    assert tokens.output_budget({"max_tokens": 50}) == 50
    assert tokens.output_budget({"max_tokens": 50, "max_completion_tokens": 70}) == 70
    assert tokens.output_budget({"max_tokens": True}) == tokens.DEFAULT_OUTPUT_TOKENS


def test_embeddings_count_inputs_and_produce_no_output() -> None:
    assert tokens.estimate_embeddings({"input": "abcdefgh"}).input_tokens == 2
    assert tokens.estimate_embeddings({"input": ["abcd", "abcd"]}).input_tokens == 2
    assert tokens.estimate_embeddings({"input": [[1, 2, 3], [4]]}).input_tokens == 4
    assert tokens.estimate_embeddings({"input": "abcd"}).output_tokens == 0


def test_malformed_parts_count_nothing_rather_than_fail() -> None:
    assert tokens.message_tokens("not a message") == 0
    assert (
        tokens.message_tokens({"role": "user", "content": [1, None, {"type": "?"}]})
        == tokens.MESSAGE_OVERHEAD
    )
