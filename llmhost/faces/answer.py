"""What the model's text of one chat answer holds: thinking, text and tool calls, read as it streams.

Faces whose answers are made of typed parts (the Anthropic Messages API's content blocks, the Responses
API's output items) share this reader: the reasoning splitter and the tool-call parser are fed the text
as it arrives, so a streamed and a whole answer split the same way, and every face reads tool calls
through the request's `ToolPlan` and the conversation layer's parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmhost.conversation.reasoning import ReasoningParserName, ReasoningSplitter
from llmhost.conversation.toolcalls import ToolCall, ToolCallDelta
from llmhost.faces.openai.tool_calls import ToolPlan


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
        self._tools = plan.parser() if plan.is_parsing else None
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

    def thinking(self) -> str:
        """The whole answer's thinking (after the last `feed`)."""
        return "".join(self._thinking)

    def text(self) -> str:
        """The whole answer's text: everything that is not thinking or a valid call. Unlike the streamed
        pieces, a call that turned out malformed after its name went out is kept here as its text."""
        if self._tools is None:
            return "".join(self._text)
        return self._tools.content() or ""

    def calls(self) -> list[ToolCall]:
        """The whole answer's well-formed calls, in order."""
        return self._tools.valid_calls() if self._tools is not None else []
