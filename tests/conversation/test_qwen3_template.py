"""The real Qwen3 chat template (tests/fixtures) rendered by our sandboxed ChatTemplate.

Expected strings are what transformers' `apply_chat_template` gives for Qwen3 (documented in the Qwen3
model card and reproduced by llama.cpp's template tests).
"""

from pathlib import Path

import pytest

from llmhost.conversation.reasoning import prompt_opens_thinking
from llmhost.conversation.template import ChatTemplate

QWEN3 = ChatTemplate(
    (Path(__file__).parent.parent / "fixtures" / "qwen3_chat_template.jinja").read_text(encoding="utf-8"),
    eos_token="<|im_end|>",
)
HI = [{"role": "user", "content": "Hi"}]


def test_default_leaves_thinking_to_the_model():
    out = QWEN3.render(HI)
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert not prompt_opens_thinking(out)


def test_enable_thinking_false_renders_an_empty_closed_block():
    out = QWEN3.render(HI, enable_thinking=False)
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert not prompt_opens_thinking(out)


def test_enable_thinking_true_is_the_default():
    assert QWEN3.render(HI, enable_thinking=True) == QWEN3.render(HI)


def test_system_prompt_without_tools():
    out = QWEN3.render([{"role": "system", "content": "Be brief."}, *HI])
    assert out.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    assert "# Tools" not in out and "<tools>" not in out


def test_history_drops_reasoning_of_turns_before_the_last_user_query():
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    out = QWEN3.render(messages)
    assert out == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    "assistant",
    [
        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
        {"role": "assistant", "content": "4", "reasoning_content": "Add them."},
    ],
)
def test_final_assistant_turn_keeps_its_reasoning(assistant):
    """After the last user query (e.g. continuing a reply), the reasoning is rendered, from either the
    `<think>` block in the content or the `reasoning_content` field."""
    out = QWEN3.render([{"role": "user", "content": "What is 2+2?"}, assistant], add_generation_prompt=False)
    assert out == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nAdd them.\n</think>\n\n4<|im_end|>\n"
    )


def test_unicode_history_is_kept():
    out = QWEN3.render([{"role": "user", "content": "你好"}], enable_thinking=False)
    assert "<|im_start|>user\n你好<|im_end|>\n" in out


def test_a_template_that_opens_the_block_is_detected():
    """Thinking-2507 style: the generation prompt ends inside an open `<think>`."""
    opened = ChatTemplate(
        QWEN3.source.replace(
            "{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<think>\\n' }}"
        )
    )
    out = opened.render(HI)
    assert out.endswith("<|im_start|>assistant\n<think>\n")
    assert prompt_opens_thinking(out)
