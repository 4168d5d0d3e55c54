"""Thinking text (`<think>…</think>`, Qwen3 and DeepSeek-R1 style) in model output.

Two uses: `strip_thinking` drops the thinking from a finished answer (faces that only want the answer),
and `ReasoningSplitter` / `split_reasoning` separate it into reasoning and content, as vLLM's `qwen3` and
`deepseek_r1` reasoning parsers do for `reasoning_content`.

The parsers work on text, not token ids, so they serve any engine and any tokenizer (in Qwen3 the
tags are ordinary tokens, and a tag can arrive split over two deltas: `"<thi"` + `"nk>"`).
"""

from __future__ import annotations

import re
from typing import Literal, get_args

THINK_START = "<think>"
THINK_END = "</think>"

ReasoningParserName = Literal["qwen3", "deepseek_r1"]
REASONING_PARSERS: tuple[str, ...] = get_args(ReasoningParserName)

_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


def strip_thinking(text: str) -> str:
    """The answer without its thinking.

    Closed `<think>…</think>` blocks are removed. A `</think>` without an opening tag (the template
    opened the block in the prompt) drops everything before it. An unclosed `<think>` (cut by
    max_tokens) drops everything from it. When nothing is left, the thinking is returned instead, so a
    caller never gets an empty answer for a model that only thought (seed 003 did the same).
    """
    answer = _THINK_BLOCK.sub("", text)
    if THINK_END in answer:
        answer = answer.split(THINK_END, 1)[1]
    if THINK_START in answer:
        answer = answer.split(THINK_START, 1)[0]
    answer = answer.strip()
    if answer:
        return answer
    return text.replace(THINK_START, "").replace(THINK_END, "").strip()


def prompt_opens_thinking(prompt: str) -> bool:
    """Whether the rendered prompt ends inside an open think block (`…<think>` plus whitespace).

    Qwen3-Thinking-2507, Qwen3.5 and DeepSeek-R1-0528 templates end the generation prompt with
    `<think>\\n`, so the model's output starts inside its reasoning and only `</think>` appears in it.
    Qwen3's `enable_thinking: false` ends the prompt with an empty, closed block: not open.
    """
    return prompt.rstrip().endswith(THINK_START)


THINK_CLOSE = "</think>\n\n"


def answer_prefill(prefill: str, opens_thinking: bool) -> str:
    """The text that starts an answer pre-filled with `prefill`. A pre-filled answer is not reasoning, so
    a think block the prompt left open is closed first."""
    if not prefill:
        return ""
    return (THINK_CLOSE if opens_thinking else "") + prefill


# Where the splitter is in the output.
_BEFORE = 0  # content that may still open a think block
_REASONING = 1  # inside the think block, waiting for `</think>`
_AFTER = 2  # the think block is over: the rest is content, tags and all


class ReasoningSplitter:
    """Splits streamed model text into `(reasoning_delta, content_delta)` pieces.

    Feed each text delta to `feed()`, then call `finish()` once when the sequence ends; concatenating
    every returned piece gives the same split as `split_reasoning` on the whole text, however the
    text was cut into deltas (even one character at a time).

    Semantics (the state a sequence starts in, and what ends it):

    * `qwen3`: the output starts as content unless the prompt already opened `<think>`. A `<think>`
      in the content opens reasoning (text before it stays content), the first `</think>` closes it,
      and everything after is content. With no `<think>` at all, everything is content (vLLM's qwen3
      parser; a `</think>` alone is then ordinary text). An output cut by max_tokens inside the
      block is all reasoning so far, with empty content.
    * `deepseek_r1`: the output is taken to start inside reasoning whatever the prompt says, because
      R1 templates (and R1 distills) open the block in the prompt or the model writes `<think>`
      first; a leading `<think>` is dropped. Everything up to the first `</think>` is reasoning.
      As in vLLM's deepseek_r1 parser, an output with no `</think>` is all reasoning.

    Whitespace the templates put around the tags (`<think>\\n`, `\\n</think>\\n\\n`) is dropped: leading
    whitespace of the reasoning and of the content after `</think>`, and trailing whitespace of the
    reasoning. To do this while streaming, and to never emit half a tag, a few characters may be held
    back until the next delta decides them.
    """

    def __init__(self, parser: ReasoningParserName = "qwen3", *, prompt_opened: bool = False) -> None:
        if parser not in REASONING_PARSERS:
            raise ValueError(f"unknown reasoning parser '{parser}'; known: {', '.join(REASONING_PARSERS)}")
        self.parser = parser
        self.has_reasoning = prompt_opened or parser == "deepseek_r1"
        self._mode = _REASONING if self.has_reasoning else _BEFORE
        self._held = ""  # text received but not yet decided
        self._at_section_start = True  # nothing emitted yet in the current section
        self._is_finished = False

    @property
    def is_in_reasoning(self) -> bool:
        return self._mode == _REASONING

    def feed(self, text: str) -> tuple[str, str]:
        """The reasoning and content that `text` (the next delta) makes final; either may be ''."""
        if self._is_finished:
            raise RuntimeError("feed() after finish()")
        self._held += text
        reasoning: list[str] = []
        content: list[str] = []
        while True:
            if self._mode == _BEFORE:
                if not self._step_before(content):
                    break
            elif self._mode == _REASONING:
                if not self._step_reasoning(reasoning):
                    break
            else:
                self._step_after(content)
                break
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """Release what was held back: the sequence ended, so nothing more can complete a tag."""
        if self._is_finished:
            return "", ""
        self._is_finished = True
        held, self._held = self._held, ""
        if self._mode == _REASONING:  # cut inside the thinking (max_tokens, stop string)
            return held.strip() if self._at_section_start else held.rstrip(), ""
        if self._mode == _AFTER:
            return "", held.lstrip() if self._at_section_start else held
        return "", held

    # -- the three states ------------------------------------------------------------------------
    def _step_before(self, content: list[str]) -> bool:
        """Content that may open a think block. True when the state changed (process on)."""
        buf = self._held
        i = buf.find(THINK_START)
        if i != -1:
            before = buf[:i]
            if not (self._at_section_start and before.isspace()):
                content.append(before)
            self._held = buf[i + len(THINK_START) :]
            self._enter(_REASONING)
            self.has_reasoning = True
            return True
        cut = len(buf) - _partial_tag_len(buf, THINK_START)
        if self._at_section_start and buf[:cut].isspace():
            return False  # whitespace before a possible `<think>`: wait for what follows
        if cut:
            content.append(buf[:cut])
            self._held = buf[cut:]
            self._at_section_start = False
        return False

    def _step_reasoning(self, reasoning: list[str]) -> bool:
        buf = self._held
        if self._at_section_start:
            buf = buf.lstrip()
            if buf.startswith(THINK_START):  # the model wrote the tag the prompt (or R1) implied
                buf = buf[len(THINK_START) :].lstrip()
            elif THINK_START.startswith(buf):  # '' or a piece of `<think>`: undecided yet
                self._held = buf
                return False
        i = buf.find(THINK_END)
        if i != -1:
            text = buf[:i].rstrip()
            if text:
                reasoning.append(text)
            self._held = buf[i + len(THINK_END) :]
            self._enter(_AFTER)
            return True
        cut = len(buf) - _partial_tag_len(buf, THINK_END)
        while cut and buf[cut - 1].isspace():  # trailing whitespace may be the last before `</think>`
            cut -= 1
        if cut:
            reasoning.append(buf[:cut])
            self._at_section_start = False
        self._held = buf[cut:]
        return False

    def _step_after(self, content: list[str]) -> None:
        buf = self._held
        if self._at_section_start:
            buf = buf.lstrip()
            if not buf:
                self._held = ""
                return
            self._at_section_start = False
        content.append(buf)
        self._held = ""

    def _enter(self, mode: int) -> None:
        self._mode = mode
        self._at_section_start = True


def _partial_tag_len(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def split_reasoning(
    text: str, prompt_opened: bool = False, parser: ReasoningParserName = "qwen3"
) -> tuple[str | None, str]:
    """`(reasoning, content)` of a finished output; reasoning is None when there was none.

    Same rules as `ReasoningSplitter` (it is fed the whole text), so a streamed and a non-streamed
    answer always split the same way. Content is '' when the output was cut inside the thinking.
    """
    splitter = ReasoningSplitter(parser, prompt_opened=prompt_opened)
    reasoning, content = splitter.feed(text)
    tail_reasoning, tail_content = splitter.finish()
    reasoning += tail_reasoning
    return reasoning or None, content + tail_content
