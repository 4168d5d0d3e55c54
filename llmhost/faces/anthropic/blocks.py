"""What the model's text becomes in a Messages API answer: thinking, text and tool_use content blocks,
whole (`AnswerReader.content`) or streamed as Anthropic's block events (`BlockEvents`).

One reader serves both (`faces/answer.py`, shared with the Responses API face), so a streamed and a
whole answer split the same way. The whole answer's blocks come in Anthropic's order (thinking, text,
tool_use) and keep a malformed call's text as text; a stream sends blocks as they come and cannot take
back a call whose name it already sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from llmhost.faces import answer
from llmhost.faces.answer import Pieces
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


class AnswerReader(answer.AnswerReader):
    """The shared reader (`faces/answer.py`), with the Messages API's view of the whole answer."""

    def content(self) -> list[ContentBlock]:
        """The whole answer's blocks (after the last `feed`)."""
        blocks: list[ContentBlock] = []
        thinking = self.thinking()
        if thinking:
            blocks.append(ThinkingContent(thinking=thinking))
        text = self.text()
        uses: list[ContentBlock] = []
        for call in self.calls():
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
