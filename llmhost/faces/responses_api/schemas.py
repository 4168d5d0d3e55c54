"""Responses API wire schemas (requests) and their translation to the chat pipeline's types.

Requests are validated strictly, as on the other faces: a string where a number belongs is a 400 naming
the field. Unknown fields are ignored, as vLLM does, so newer SDKs keep working; the fields OpenAI
defines that would change the answer and that llmhost cannot honour are a 400 naming them
(`check_supported`): `background`, `conversation`, `prompt`, `truncation: "auto"`, `top_logprobs`,
`include` of anything but `reasoning.encrypted_content`, tools other than functions, file and audio
content (images are `input_image` parts of user messages, for a vision model: items.py), and input
items other than messages, function calls and their outputs, and reasoning.

Accepted without effect: `strict` on a function tool (a forced call follows the tool's schema on an
engine that enforces grammars; an unforced call is not constrained, as on the chat route),
`include: ["reasoning.encrypted_content"]` (Codex asks for it; the reasoning comes back in plain text
instead), `reasoning.summary`, `text.verbosity`, and `metadata`, `user`, `prompt_cache_key`,
`service_tier` and the like, which do not touch the answer.

The input items, and what they become in the prompt, are in items.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from llmhost.conversation.structured import grammar_for_response_format
from llmhost.conversation.tool_formats import ToolCallFormat
from llmhost.errors import InvalidRequest
from llmhost.faces.openai.tool_calls import ToolPlan
from llmhost.types import SamplingParams

from .items import InputItem, MessageItem, RequestModel, check_items

Number = Annotated[float, Field(strict=True)]
# What a client may ask to `include` that changes nothing here: Codex asks for encrypted reasoning to
# send back in its next request; reasoning items come back with their text instead.
HARMLESS_INCLUDES = frozenset({"reasoning.encrypted_content"})


# -- tools, text format, reasoning ------------------------------------------------------------------
class FunctionTool(RequestModel):
    """Responses' flat function tool (the chat API nests the same fields under `function`)."""

    type: StrictStr
    name: StrictStr | None = None
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None

    def to_template(self) -> dict[str, Any]:
        """The chat-style tool that templates and the tool-call plan read."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters or {"type": "object", "properties": {}}
        return {"type": "function", "function": function}

    def echo(self) -> dict[str, Any]:
        """The tool as the response object repeats it."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": True if self.strict is None else self.strict,  # OpenAI's default
        }


class ToolChoiceFunction(RequestModel):
    type: StrictStr
    name: StrictStr | None = None


class TextFormat(RequestModel):
    type: Literal["text", "json_object", "json_schema"]
    name: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: StrictStr | None = None
    strict: StrictBool | None = None

    def echo(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class TextConfig(RequestModel):
    format: TextFormat | None = None
    verbosity: StrictStr | None = None  # GPT-5's answer length: no equivalent here, accepted


class ReasoningConfig(RequestModel):
    effort: StrictStr | None = None
    summary: StrictStr | None = None


# -- the request -------------------------------------------------------------------------------------
class ResponsesRequest(RequestModel):
    model: StrictStr | None = None
    input: StrictStr | Annotated[list[InputItem], Field(min_length=1)]
    instructions: StrictStr | None = None
    previous_response_id: StrictStr | None = None
    store: StrictBool = True
    stream: StrictBool = False
    max_output_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0.0, le=2.0)
    top_p: Number | None = Field(None, gt=0.0, le=1.0)
    tools: list[FunctionTool] | None = None
    tool_choice: StrictStr | ToolChoiceFunction | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, StrictStr] | None = None
    user: StrictStr | None = None
    # OpenAI's, refused unless set to what changes nothing (check_supported).
    background: StrictBool | None = None
    include: list[StrictStr] | None = None
    truncation: StrictStr | None = None
    top_logprobs: StrictInt | None = None
    conversation: Any = None
    prompt: Any = None

    def check_supported(self) -> str | None:
        """400, naming the field, for what would change the answer and is not implemented; the grammar
        `text.format` asks for (None for free text)."""
        if self.background:
            raise InvalidRequest(
                "'background' responses are not supported: send the request and wait", param="background"
            )
        for name in ("conversation", "prompt"):
            if getattr(self, name) is not None:
                raise InvalidRequest(f"'{name}' is not supported: send the 'input' itself", param=name)
        if self.truncation not in (None, "disabled"):
            raise InvalidRequest(
                "'truncation' must be 'disabled': an input longer than the context is refused, not cut",
                param="truncation",
            )
        if self.top_logprobs:
            raise InvalidRequest("'top_logprobs' is not supported by this server yet", param="top_logprobs")
        for i, value in enumerate(self.include or ()):
            if value not in HARMLESS_INCLUDES:
                raise InvalidRequest(f"'include' of '{value}' is not supported", param=f"include[{i}]")
        self._check_tools()
        if isinstance(self.input, list):
            check_items(self.input)
        return self._grammar()

    def _check_tools(self) -> None:
        names = []
        for i, tool in enumerate(self.tools or ()):
            if tool.type != "function":
                raise InvalidRequest(
                    f"tools of type '{tool.type}' are not supported: only 'function' tools, which the client "
                    "runs",
                    param=f"tools[{i}].type",
                )
            if not tool.name:
                raise InvalidRequest("a function tool needs a non-empty 'name'", param=f"tools[{i}].name")
            names.append(tool.name)
        choice = self.tool_choice
        if choice is None or choice in ("none", "auto"):
            return
        if isinstance(choice, str):
            if choice != "required":
                raise InvalidRequest(
                    "'tool_choice' must be 'none', 'auto', 'required' or a function", param="tool_choice"
                )
            if not names:
                raise InvalidRequest("'tool_choice' 'required' needs 'tools'", param="tool_choice")
            return
        if choice.type != "function" or not choice.name:
            raise InvalidRequest(
                "'tool_choice' must be {'type': 'function', 'name': …}; built-in tools are not supported",
                param="tool_choice",
            )
        if choice.name not in names:
            raise InvalidRequest(
                f"'tool_choice' names '{choice.name}', which is not in 'tools'", param="tool_choice"
            )

    def _grammar(self) -> str | None:
        fmt = self.text.format if self.text is not None else None
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_schema" and (not fmt.name or fmt.schema_ is None):
            raise InvalidRequest(
                "'text.format' of type 'json_schema' needs 'name' and 'schema'", param="text.format"
            )
        spec = {
            "type": fmt.type,
            "json_schema": {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict},
        }
        try:
            return grammar_for_response_format(spec)
        except InvalidRequest as exc:  # worded for the chat route's field
            message = exc.message.removeprefix("response_format: ")
            raise InvalidRequest(f"text.format: {message}", param="text.format") from None

    # -- what the pipeline gets -----------------------------------------------------------------------
    def tool_plan(self, tool_format: ToolCallFormat) -> ToolPlan:
        """The tools' plan; calls are read in the server's `tool_format` (the chat face's own rules)."""
        if not self.tools:
            return ToolPlan()
        choice: Any = self.tool_choice or "auto"
        if isinstance(choice, ToolChoiceFunction):
            choice = {"type": "function", "function": {"name": choice.name}}
        tools = [t.to_template() for t in self.tools]
        return ToolPlan.from_request(tools, choice, self.parallel_tool_calls, tool_format=tool_format)

    def template_kwargs(self) -> dict[str, Any]:
        """`reasoning.effort` for the template: `none` turns thinking off (Qwen3's `enable_thinking`), any
        other effort reaches templates that read `reasoning_effort` (gpt-oss)."""
        effort = self.reasoning.effort if self.reasoning is not None else None
        if effort is None:
            return {}
        return {"enable_thinking": False} if effort == "none" else {"reasoning_effort": effort}

    def sampling(self, grammar: str | None) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_output_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,  # OpenAI's defaults
            top_p=1.0 if self.top_p is None else self.top_p,
            grammar=grammar,
        )

    def input_items(self) -> list[Any]:
        """`input` as items (a string is one user message)."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)
