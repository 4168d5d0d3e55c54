"""What the model's text becomes in a Messages API answer: thinking, text and tool_use content blocks,
whole (`AnswerReader.content`) or streamed as Anthropic's block events (`BlockEvents`).

One reader serves both: the reasoning splitter and the hermes tool-call parser are fed the text as it
arrives, so a streamed and a whole answer split the same way. The whole answer's blocks come in
Anthropic's order (thinking, text, tool_use) and keep a malformed call's text as text; a stream sends
blocks as they come and cannot take back a call whose name it already sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmhost.conversation.reasoning import ReasoningParserName, ReasoningSplitter
from llmhost.conversation.toolcalls import ToolCallDelta, ToolCallParser
from llmhost.faces.openai.tool_calls import ToolPlan
from llmhost.types import Delta, FinishReason

from .responses import (
    ContentBlock,
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    InputJsonDelta,
    StopReason,
    TextContent,
    TextDelta,
    ThinkingContent,
    ThinkingDelta,
    ToolUseContent,
    sse_event,
)


def tool_use_id(call_id: str) -> str:
    """Anthropic's id style (`toolu_…`) for the parser's call id (`call_…`)."""
    return "toolu_" + call_id.removeprefix("call_")


@dataclass
class Pieces:
    """What one delta of model text adds: thinking comes before text, and text before calls."""

    thinking: str = ""
    text: str = ""
    calls: list[ToolCallDelta] = field(default_factory=list)


class AnswerReader:
    """Splits one answer's text into thinking, text and tool calls.

    `parser` None: no thinking is split out (a pre-filled answer is never thinking: the pipeline closes
    an open think block before the pre-fill). `plan`'s pre-fill (a forced call's start) is the answer's
    beginning, fed first."""

    def __init__(self, parser: ReasoningParserName | None, plan: ToolPlan, *, opens_thinking: bool) -> None:
        self._splitter = ReasoningSplitter(parser, prompt_opened=opens_thinking) if parser else None
        self._tools = ToolCallParser() if plan.is_parsing else None
        self._start = plan.prefill
        self._thinking: list[str] = []
        self._text: list[str] = []

    def feed(self, text: str, *, is_last: bool) -> Pieces:
        text, self._start = self._start + text, ""
        if self._splitter is None:
            thinking, content = "", text
        else:
            thinking, content = self._splitter.feed(text)
            if is_last:
                tail_thinking, tail_content = self._splitter.finish()
                thinking, content = thinking + tail_thinking, content + tail_content
        pieces = Pieces(thinking)
        if self._tools is None:
            pieces.text = content
        else:
            parsed = self._tools.feed(content) if content else None
            tail = self._tools.finish() if is_last else None
            for part in (parsed, tail):
                if part is not None:
                    pieces.text += part.content
                    pieces.calls += part.tool_calls
        self._thinking.append(pieces.thinking)
        self._text.append(pieces.text)
        return pieces

    @property
    def has_calls(self) -> bool:
        return self._tools is not None and bool(self._tools.valid_calls())

    def content(self) -> list[ContentBlock]:
        """The whole answer's blocks (after the last `feed`)."""
        blocks: list[ContentBlock] = []
        thinking = "".join(self._thinking)
        if thinking:
            blocks.append(ThinkingContent(thinking=thinking))
        text = "".join(self._text) if self._tools is None else self._tools.content() or ""
        uses: list[ContentBlock] = []
        for call in self._tools.valid_calls() if self._tools else ():
            arguments = json.loads(call.arguments or "{}")
            if isinstance(arguments, dict):
                uses.append(ToolUseContent(id=tool_use_id(call.id), name=call.name, input=arguments))
            else:  # valid JSON yet not an object: not a tool input, so the model's text stays text
                text += call.raw
        if text:
            blocks.append(TextContent(text=text))
        return blocks + uses

    def stop_reason(
        self, last: Delta | None, stop_sequences: Sequence[str]
    ) -> tuple[StopReason | None, str | None]:
        """`(stop_reason, stop_sequence)` for the answer whose last delta is `last`."""
        if last is None or last.finish_reason == FinishReason.ABORT:
            return None, None
        if last.finish_reason == FinishReason.LENGTH:
            return "max_tokens", None
        if self.has_calls:
            return "tool_use", None
        if isinstance(last.stop_reason, str) and last.stop_reason in stop_sequences:
            return "stop_sequence", last.stop_reason
        return "end_turn", None


class BlockEvents:
    """Anthropic's block events for streamed pieces: each block is started, filled by deltas and stopped
    before the next one starts; indexes count the blocks in order."""

    def __init__(self) -> None:
        self._index = -1
        self._open: str | None = None  # the type of the block being filled

    def events(self, pieces: Pieces) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if pieces.thinking:
            out += self._enter("thinking", ThinkingContent(thinking=""))
            out.append(self._delta(ThinkingDelta(thinking=pieces.thinking)))
        if pieces.text:
            out += self._enter("text", TextContent(text=""))
            out.append(self._delta(TextDelta(text=pieces.text)))
        for piece in pieces.calls:
            if piece.name is not None:  # a call starts: a block of its own, then its arguments as they come
                start = ToolUseContent(id=tool_use_id(piece.id or ""), name=piece.name, input={})
                out += self._enter("tool_use", start, is_new=True)
            if piece.arguments:
                out.append(self._delta(InputJsonDelta(partial_json=piece.arguments)))
        return out

    def close(self) -> list[tuple[str, str]]:
        if self._open is None:
            return []
        self._open = None
        return [sse_event(ContentBlockStopEvent(index=self._index))]

    def _enter(self, kind: str, start: ContentBlock, *, is_new: bool = False) -> list[tuple[str, str]]:
        if self._open == kind and not is_new:
            return []
        out = self.close()
        self._index += 1
        self._open = kind
        out.append(sse_event(ContentBlockStartEvent(index=self._index, content_block=start)))
        return out

    def _delta(self, delta: TextDelta | ThinkingDelta | InputJsonDelta) -> tuple[str, str]:
        return sse_event(ContentBlockDeltaEvent(index=self._index, delta=delta))
