"""Tool-call formats: how a model writes a call, and everything in llmhost that depends on it.

`--tool-call-parser` chooses one for the server:

- `hermes`: JSON in `<tool_call>` tags (Qwen2.5, Qwen3, Hermes, and llmhost's own tool prompt);
- `qwen3_coder`: Qwen3-Coder's XML (`<function=NAME>` with `<parameter=P>` blocks), newer Qwen models too;
- `auto` (the default): the chat template's own choice. A template that writes an assistant's calls as
  `<function=NAME>` asks for qwen3_coder; any other (one that ignores tool calls included, which gets
  llmhost's hermes tool prompt) hermes.

A format is the parser of the model's output, the pre-fill and grammar of a forced call, and, for
templates that ignore tools, how the tools and earlier calls are written into the prompt. The chat
template resolves the setting once (`ChatTemplate.tool_call_format`); every face reads calls through the
format its request's tool plan carries and never picks a parser itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from llmhost.conversation import tool_grammar, tool_prompt
from llmhost.conversation.qwen3_coder_calls import Qwen3CoderParser
from llmhost.conversation.toolcalls import ParsedDelta, ToolCall, ToolCallParser

ToolCallParserName = Literal["auto", "hermes", "qwen3_coder"]
TOOL_CALL_PARSERS: tuple[str, ...] = get_args(ToolCallParserName)

Tools = Sequence[Mapping[str, Any]]  # OpenAI's shape: {"type": "function", "function": {name, parameters}}


class ToolCallStream(Protocol):
    """A streaming tool-call parser: feed text deltas, `finish()` once, then read the whole answer."""

    def feed(self, text: str) -> ParsedDelta: ...

    def finish(self) -> ParsedDelta: ...

    def content(self) -> str | None: ...

    def valid_calls(self) -> list[ToolCall]: ...


@dataclass(frozen=True)
class ToolCallFormat:
    name: str
    _new_parser: Callable[[Tools], ToolCallStream]
    _forced_prefix: Callable[[str | None], str]
    _forced_grammar: Callable[[Sequence[dict[str, Any]], str | None], str]
    system_text: Callable[[Tools], str]  # the tools and how to call them, for a template that ignores them
    call_text: Callable[[str, Any], str]  # an earlier call (name, arguments) as the model writes it

    def parser(self, tools: Tools) -> ToolCallStream:
        """A parser for one answer; `tools` (the request's) type the values where the format needs it."""
        return self._new_parser(tools)

    def parse(self, text: str, tools: Tools) -> tuple[str | None, list[ToolCall]]:
        """`(content, calls)` of a finished answer: the streaming parser fed the whole text, so a
        streamed and a non-streamed answer agree. Content is None when the answer is only calls."""
        parser = self.parser(tools)
        parser.feed(text)
        parser.finish()
        return parser.content(), parser.valid_calls()

    def forced_prefix(self, name: str | None) -> str:
        """The start of a call, pre-filled so the model must write one: through the function's name
        when it is known (`tool_choice` naming one, or `required` with one tool), else up to it."""
        return self._forced_prefix(name)

    def forced_grammar(self, tools: Sequence[dict[str, Any]], name: str | None) -> str:
        """The GBNF grammar for what follows `forced_prefix(name)`, on engines that enforce grammars."""
        return self._forced_grammar(tools, name)


HERMES = ToolCallFormat(
    "hermes",
    lambda tools: ToolCallParser(),
    tool_prompt.forced_call_prefix,
    tool_grammar.forced_call_grammar,
    tool_prompt.tools_system_text,
    tool_prompt.hermes_call_text,
)
QWEN3_CODER = ToolCallFormat(
    "qwen3_coder",
    Qwen3CoderParser,
    tool_prompt.qwen3_coder_forced_prefix,
    tool_grammar.qwen3_coder_call_grammar,
    tool_prompt.qwen3_coder_system_text,
    tool_prompt.qwen3_coder_call_text,
)
FORMATS = {f.name: f for f in (HERMES, QWEN3_CODER)}


def resolve_tool_call_format(setting: str, *, template_writes_xml_calls: bool) -> ToolCallFormat:
    """The format for `--tool-call-parser` (`auto`: from what the chat template writes)."""
    if setting == "auto":
        return QWEN3_CODER if template_writes_xml_calls else HERMES
    return FORMATS[setting]
