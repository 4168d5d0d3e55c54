"""Thinking text: strip_thinking, and the streaming reasoning splitter (every edge case, any cut)."""

import random

import pytest

from llmhost.conversation.reasoning import (
    ReasoningSplitter,
    prompt_opens_thinking,
    split_reasoning,
    strip_thinking,
)


def test_strip_closed_block():
    assert strip_thinking("<think>\nhmm, 2+2\n</think>\n\nThe answer is 4.") == "The answer is 4."


def test_strip_block_opened_in_the_prompt():
    assert strip_thinking("reasoning here</think>\n\nParis") == "Paris"


def test_strip_unclosed_block_cut_by_max_tokens():
    assert strip_thinking("Sure. <think>let me see") == "Sure."


def test_only_thinking_returns_the_thinking():
    assert strip_thinking("<think>just thoughts</think>") == "just thoughts"


def test_no_thinking_is_unchanged_but_trimmed():
    assert strip_thinking("  plain answer ") == "plain answer"


# -- the reasoning splitter -----------------------------------------------------------------------
QWEN3_OUTPUT = "<think>\nThe user greets me.\nI greet back.\n</think>\n\nHello! How can I help?"


def feed_all(pieces, parser="qwen3", prompt_opened=False):
    """Feed pieces one by one; returns (reasoning, content, per-piece outputs)."""
    splitter = ReasoningSplitter(parser, prompt_opened=prompt_opened)
    outputs = [splitter.feed(p) for p in pieces]
    outputs.append(splitter.finish())
    reasoning = "".join(r for r, _ in outputs)
    content = "".join(c for _, c in outputs)
    return reasoning, content, outputs


def char_by_char(text, **kw):
    reasoning, content, _ = feed_all(list(text), **kw)
    return reasoning or None, content


@pytest.mark.parametrize(
    "text, prompt_opened, parser, expected",
    [
        # qwen3, model opens the block itself (Qwen3 with thinking on)
        (QWEN3_OUTPUT, False, "qwen3", ("The user greets me.\nI greet back.", "Hello! How can I help?")),
        # the template opened it (Qwen3-Thinking-2507): only </think> in the output
        ("The user greets me.\n</think>\n\nHello!", True, "qwen3", ("The user greets me.", "Hello!")),
        # no think block at all and none opened: all content, untouched
        ("Hello there.\n", False, "qwen3", (None, "Hello there.\n")),
        # a lone </think> without an opening is ordinary text for qwen3
        ("a </think> b", False, "qwen3", (None, "a </think> b")),
        # cut by max_tokens inside the thinking: all reasoning, empty content
        ("<think>\nLet me count: 1, 2, ", False, "qwen3", ("Let me count: 1, 2,", "")),
        ("Still thinking", True, "qwen3", ("Still thinking", "")),
        # text before <think> stays content
        ("Sure. <think>hmm</think>Done", False, "qwen3", ("hmm", "Sure. Done")),
        # enable_thinking=false: the prompt holds the empty block; the output is the answer
        ("Paris.", False, "qwen3", (None, "Paris.")),
        # an empty think block written by the model
        ("<think>\n\n</think>\n\nHi", False, "qwen3", (None, "Hi")),
        # only the first </think> ends the reasoning
        ("<think>a</think>b</think>c", False, "qwen3", ("a", "b</think>c")),
        # deepseek_r1: starts inside reasoning; a leading <think> is dropped
        ("Okay, so 2+2.\n</think>\n\n4", False, "deepseek_r1", ("Okay, so 2+2.", "4")),
        ("<think>\nOkay.\n</think>\n\n4", False, "deepseek_r1", ("Okay.", "4")),
        # deepseek_r1 with no </think> at all: all reasoning (vLLM's deepseek_r1 does the same)
        ("Just an answer", False, "deepseek_r1", ("Just an answer", "")),
        # unicode passes through
        ("<think>想一想</think>\n\n你好", False, "qwen3", ("想一想", "你好")),
    ],
)
def test_split_whole_and_char_by_char_agree(text, prompt_opened, parser, expected):
    assert split_reasoning(text, prompt_opened, parser) == expected
    assert char_by_char(text, prompt_opened=prompt_opened, parser=parser) == expected


def test_tag_split_across_deltas_is_never_emitted_in_pieces():
    pieces = ["<thi", "nk>\nfirst", " thought</th", "ink>", "\n\nthe ", "answer"]
    reasoning, content, outputs = feed_all(pieces)
    assert (reasoning, content) == ("first thought", "the answer")
    assert all("<" not in r and "<" not in c for r, c in outputs)
    # nothing is emitted while the opening tag is incomplete; reasoning flows before `</think>` arrives
    assert outputs[0] == ("", "")
    assert outputs[1] == ("first", "") and outputs[2] == (" thought", "")


def test_streaming_emits_reasoning_before_the_block_closes():
    splitter = ReasoningSplitter("qwen3")
    assert splitter.feed("<think>\nstep one") == ("step one", "")
    assert splitter.is_in_reasoning
    assert splitter.feed(", step two\n") == (", step two", "")  # trailing newline held back
    assert splitter.feed("more") == ("\nmore", "")  # ... and released when text follows
    assert splitter.feed("</think>\n\nAns") == ("", "Ans")
    assert not splitter.is_in_reasoning
    assert splitter.feed("wer <think>x</think>") == ("", "wer <think>x</think>")
    assert splitter.finish() == ("", "")


def test_partial_tag_at_the_end_is_released_by_finish():
    splitter = ReasoningSplitter("qwen3")
    assert splitter.feed("Hello <thi") == ("", "Hello ")
    assert splitter.finish() == ("", "<thi")
    splitter = ReasoningSplitter("qwen3", prompt_opened=True)
    assert splitter.feed("thinking </thi") == ("thinking", "")
    assert splitter.finish() == (" </thi", "")


def test_leading_whitespace_before_think_is_dropped_but_kept_for_plain_answers():
    assert split_reasoning("\n<think>x</think>y") == ("x", "y")
    assert split_reasoning("  plain") == (None, "  plain")
    assert char_by_char("  plain") == (None, "  plain")


@pytest.mark.parametrize("parser", ["qwen3", "deepseek_r1"])
@pytest.mark.parametrize(
    "text",
    [
        QWEN3_OUTPUT,
        "The user greets me.\n</think>\n\nHello!",
        "<think>x</think>",
        "plain answer with < and </ and <th signs",
        "<think>\n cut <",
        "\n\n<think>\n\n",
    ],
)
@pytest.mark.parametrize("prompt_opened", [False, True])
def test_any_cut_into_deltas_gives_the_same_split(parser, text, prompt_opened):
    whole = split_reasoning(text, prompt_opened, parser)
    rng = random.Random(f"{parser}|{text}|{prompt_opened}")  # str seeds are stable across runs
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 6))))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        reasoning, content, _ = feed_all(pieces, parser=parser, prompt_opened=prompt_opened)
        assert (reasoning or None, content) == whole, pieces


def test_prompt_opens_thinking():
    assert prompt_opens_thinking("<|im_start|>assistant\n<think>\n")
    assert prompt_opens_thinking("<｜Assistant｜><think>")
    assert not prompt_opens_thinking("<|im_start|>assistant\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_unknown_parser_and_feed_after_finish_are_refused():
    with pytest.raises(ValueError, match="unknown reasoning parser"):
        ReasoningSplitter("granite")  # type: ignore[arg-type]
    splitter = ReasoningSplitter()
    splitter.finish()
    with pytest.raises(RuntimeError):
        splitter.feed("x")
