"""OpenAI function calling in the chat face: `tools`/`tool_choice` checks, the prompt plan, and the
translation of parsed calls into message and delta models.

The calls are read in the server's tool-call format (`conversation/tool_formats.py`: hermes JSON or
Qwen3-Coder's XML, from `--tool-call-parser` and the chat template), which every face passes to
`ToolPlan.from_request`; the plan makes the format's parser, pre-fill and grammar.

`tool_choice`:
* `none`: the tools are not offered to the model and the output is not parsed (plain content);
* `auto` (the default with tools): offered, and calls in the output are parsed;
* `required` / a named function: the start of a call is pre-filled at the start of the assistant turn
  (hermes: `<tool_call>\\n{"name": "`, or the whole head up to `"arguments": ` for a named function;
  qwen3_coder: `<tool_call>\\n<function=`, or through the name's line), so the model has to write a
  call. The pre-fill is part of the answer: it is put back in front of the generated text before
  parsing. This needs no constrained decoding, so it works on every engine; on an engine that enforces
  grammars the rest of the call is constrained too (`conversation/tool_grammar.py`): a known function
  name and arguments that follow its `parameters` schema.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from llmhost.conversation.reasoning import answer_prefill
from llmhost.conversation.tool_formats import HERMES, ToolCallFormat, ToolCallStream
from llmhost.conversation.toolcalls import TOOL_CALL_END, ToolCallDelta, call_to_dict
from llmhost.errors import InvalidRequest
from llmhost.types import SamplingParams

from .responses import ChatCompletionDelta, ChatCompletionMessage, DeltaFunction, DeltaToolCall, ToolCall


def check_tools(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None) -> None:
    """400 (with `param`) for tools OpenAI would refuse: wrong type, no name, an unknown choice."""
    names: list[str] = []
    for i, tool in enumerate(tools or []):
        if tool.get("type") != "function":
            raise InvalidRequest("only tools of type 'function' are supported", param=f"tools[{i}].type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise InvalidRequest("a tool needs a 'function' object", param=f"tools[{i}].function")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("a function needs a non-empty 'name'", param=f"tools[{i}].function.name")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise InvalidRequest(
                "'parameters' must be a JSON Schema object", param=f"tools[{i}].function.parameters"
            )
        names.append(name)
    if tool_choice is None or tool_choice in ("none", "auto"):
        return
    if isinstance(tool_choice, str):
        if tool_choice != "required":
            raise InvalidRequest(
                "'tool_choice' must be 'none', 'auto', 'required' or a function", param="tool_choice"
            )
        if not names:
            raise InvalidRequest("'tool_choice' 'required' needs 'tools'", param="tool_choice")
        return
    function = tool_choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if tool_choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            "'tool_choice' must be {'type': 'function', 'function': {'name': …}}", param="tool_choice"
        )
    if name not in names:
        raise InvalidRequest(f"'tool_choice' names '{name}', which is not in 'tools'", param="tool_choice")


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools mean for the prompt and the output."""

    tools: list[dict[str, Any]] | None = None  # offered to the template
    prefill: str = ""  # pre-filled at the start of the assistant turn (and of the answer)
    # A named function or `parallel_tool_calls: false`: one call, so generation stops at its end.
    is_single_call: bool = False
    forced_name: str | None = None  # the function a forced call's pre-fill already names
    tool_format: ToolCallFormat = HERMES  # how the model writes calls (only read when there are tools)

    @classmethod
    def from_request(
        cls,
        tools: list[dict[str, Any]] | None,
        tool_choice: Any,
        parallel_tool_calls: bool | None = None,
        *,
        tool_format: ToolCallFormat,
    ) -> ToolPlan:
        """The plan for a request's tools; `tool_format` is the server's (`ChatTemplate.tool_call_format`,
        which `ServerState.require_loaded()` returns)."""
        if not tools or tool_choice == "none":
            return cls()
        is_single = parallel_tool_calls is False
        if tool_choice == "required":
            # With one tool there is one possible call: pre-fill its name too, which small models need.
            only = tools[0]["function"]["name"] if len(tools) == 1 else None
            prefill = tool_format.forced_prefix(only)
            return cls(tools, prefill, is_single_call=is_single, forced_name=only, tool_format=tool_format)
        if isinstance(tool_choice, dict):
            name = tool_choice["function"]["name"]
            prefill = tool_format.forced_prefix(name)
            return cls(tools, prefill, is_single_call=True, forced_name=name, tool_format=tool_format)
        return cls(tools, is_single_call=is_single, tool_format=tool_format)

    def sampling(self, params: SamplingParams, *, supports_grammar: bool = False) -> SamplingParams:
        """A single call (a named function, as OpenAI does, or `parallel_tool_calls: false`): stop at
        `</tool_call>` rather than let the model go on. The parser accepts a complete call without
        its end tag. A forced call on an engine that enforces grammars: the rest of the call follows
        the functions' schemas (unless the request brought a grammar of its own, `response_format`)."""
        if self.prefill and self.tools and supports_grammar and params.grammar is None:
            params = replace(params, grammar=self.tool_format.forced_grammar(self.tools, self.forced_name))
        if not self.is_single_call or TOOL_CALL_END in params.stop:
            return params
        return replace(params, stop=(*params.stop, TOOL_CALL_END))

    @property
    def is_parsing(self) -> bool:
        return self.tools is not None

    def parser(self) -> ToolCallStream:
        """A streaming parser for one answer, in the server's format (call only when `is_parsing`)."""
        return self.tool_format.parser(self.tools or ())

    def template_kwargs(self, requested: dict[str, Any] | None) -> dict[str, Any]:
        """The request's `chat_template_kwargs` plus the tools to offer."""
        kwargs = dict(requested or {})
        if self.tools is not None:
            kwargs["tools"] = self.tools
        return kwargs

    def answer_prefix(self, opens_thinking: bool) -> str:
        """Text appended to the rendered prompt, and so the start of the answer. A forced call
        cannot start inside an open think block, so the block is closed first (no reasoning then)."""
        return answer_prefill(self.prefill, opens_thinking)

    def message(
        self, message: ChatCompletionMessage, finish: str | None
    ) -> tuple[ChatCompletionMessage, str | None]:
        """A non-streamed `message` with its calls parsed out of `content`, and the finish reason."""
        if not self.is_parsing or message.content is None:
            return message, finish
        content, calls = self.tool_format.parse(message.content, self.tools or ())
        if not calls:
            return message, finish
        tool_calls = [ToolCall.model_validate(call_to_dict(c)) for c in calls]
        message = message.model_copy(update={"content": content, "tool_calls": tool_calls})
        return message, ("tool_calls" if finish == "stop" else finish)


class ToolStream:
    """One streamed choice's tool-call parsing: content in, content and `tool_calls` deltas out."""

    def __init__(self, plan: ToolPlan, opens_thinking: bool) -> None:
        self._parser = plan.parser()
        self._prefix = plan.answer_prefix(opens_thinking)  # the pre-fill belongs to the answer

    def text(self, text: str) -> str:
        """The model's text delta, with the pre-fill in front of the first one."""
        prefix, self._prefix = self._prefix, ""
        return prefix + text

    def messages(self, reasoning: str, content: str, is_last: bool) -> list[ChatCompletionDelta]:
        """One delta's reasoning and content as one or more deltas: a call's start is its own delta, as
        in vLLM, so a client sees `{index, id, type, function: {name, arguments: ""}}` first."""
        parsed = self._parser.feed(content) if content else None
        pieces = list(parsed.tool_calls) if parsed else []
        text = parsed.content if parsed else ""
        if is_last:
            tail = self._parser.finish()
            text += tail.content
            pieces += tail.tool_calls
        head = ChatCompletionDelta.of_text(reasoning, text)
        out = [] if head.is_empty else [head]
        for piece in _merge_arguments(pieces):
            out.append(ChatCompletionDelta(tool_calls=[_delta_call(piece)]))
        return out

    def finish_reason(self, finish: str | None) -> str | None:
        return "tool_calls" if finish == "stop" and self._parser.valid_calls() else finish


def _merge_arguments(pieces: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Consecutive argument pieces of one call as one piece (fewer, larger chunks)."""
    out: list[ToolCallDelta] = []
    for piece in pieces:
        last = out[-1] if out else None
        if last is not None and piece.name is None and last.name is None and last.index == piece.index:
            last.arguments += piece.arguments
        else:
            out.append(ToolCallDelta(piece.index, piece.arguments, piece.id, piece.name))
    return out


def _delta_call(piece: ToolCallDelta) -> DeltaToolCall:
    if piece.name is not None:
        return DeltaToolCall(
            index=piece.index,
            id=piece.id,
            type="function",
            function=DeltaFunction(name=piece.name, arguments=piece.arguments),
        )
    return DeltaToolCall(index=piece.index, function=DeltaFunction(arguments=piece.arguments))
