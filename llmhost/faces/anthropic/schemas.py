"""Anthropic Messages API wire schemas (requests) and their translation to the chat pipeline's types.

Requests are validated strictly: a string where a number belongs is a 400 naming the field. Unknown
fields are ignored, as vLLM does, so newer SDKs keep working; the fields Anthropic defines that would
change the answer and that llmhost does not implement are a 400 naming them (`check_supported`):
server tools, `output_config.format`, `mcp_servers`, `container`, document blocks, strict tools, and
images anywhere but in user content.

Accepted without effect: `context_management` and `output_config.effort`, which Claude Code sends and a
400 would break it for (Anthropic clears old tool results and thinking on its side; here the whole
conversation is rendered), `thinking.budget_tokens` (Qwen3 has no thinking budget: `max_tokens` bounds
thinking and answer together), and `metadata`, `cache_control`, `service_tier` and the like, which do
not touch the answer. `tool_result.is_error` reaches the model only through the result's text.
`thinking` `enabled` or `adaptive` renders with `enable_thinking: true`, `disabled` with false.

The conversation becomes the chat template's messages: `system` (and any `system`-role message) one
system message; a user `tool_result` a `tool` message; an assistant `tool_use` an OpenAI-style
`tool_calls` entry (the form templates render) and its `thinking` the `reasoning_content`. A last
assistant message is a pre-fill: the answer continues it. A user `image` block (a `base64` or `url`
source) becomes an image part of its message, for a model that takes images (others answer 400).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from llmhost.conversation.reasoning import ReasoningParserName
from llmhost.conversation.tool_formats import ToolCallFormat
from llmhost.errors import InvalidRequest
from llmhost.faces.openai.tool_calls import ToolPlan
from llmhost.media import ImagePart
from llmhost.pipeline import ChatInput
from llmhost.types import SamplingParams

from .content import (
    ImageBlock,
    InputMessage,
    RedactedThinkingBlock,
    RequestModel,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

Number = Annotated[float, Field(strict=True)]
# Claude Code's system prompt starts with a per-request attribution line; it means nothing to the model
# and, changing on every request, would defeat prefix caching (vLLM drops it too).
BILLING_HEADER = "x-anthropic-billing-header"


# -- tools and thinking ------------------------------------------------------------------------------
class ToolDefinition(RequestModel):
    type: StrictStr | None = None  # a client tool: absent or "custom"; others are Anthropic's server tools
    name: StrictStr = Field(min_length=1)
    description: StrictStr | None = None
    input_schema: dict[str, Any] | None = None
    strict: StrictBool | None = None

    def to_template(self) -> dict[str, Any]:
        """The OpenAI-style function tool that templates and the tool-call plan read."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.input_schema
        return {"type": "function", "function": function}


class ToolChoice(RequestModel):
    type: Literal["auto", "any", "tool", "none"]
    name: StrictStr | None = None
    disable_parallel_tool_use: StrictBool = False

    def to_openai(self) -> str | dict[str, Any]:
        if self.type == "tool":
            return {"type": "function", "function": {"name": self.name}}
        return {"auto": "auto", "any": "required", "none": "none"}[self.type]


class ThinkingConfig(RequestModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: StrictInt | None = Field(None, ge=1)

    @property
    def is_on(self) -> bool:
        return self.type != "disabled"


class OutputConfig(RequestModel):
    effort: StrictStr | None = None
    format: dict[str, Any] | None = None


# -- requests ----------------------------------------------------------------------------------------
class _Conversation(RequestModel):
    """What `/v1/messages` and `/v1/messages/count_tokens` both render."""

    model: StrictStr
    messages: list[InputMessage] = Field(min_length=1)
    system: StrictStr | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    mcp_servers: list[Any] | None = None
    container: Any = None

    def check_supported(self) -> None:
        """400, naming the field, for what would change the answer and is not implemented."""
        if self.output_config is not None and self.output_config.format is not None:
            raise InvalidRequest("'output_config.format' is not supported", param="output_config.format")
        if self.mcp_servers:
            raise InvalidRequest("'mcp_servers' is not supported", param="mcp_servers")
        if self.container is not None:
            raise InvalidRequest("'container' is not supported (no server tools run here)", param="container")
        names = [self._check_tool(i, tool) for i, tool in enumerate(self.tools or ())]
        choice = self.tool_choice
        if choice is None or choice.type in ("auto", "none"):
            return
        if not names:
            raise InvalidRequest(f"'tool_choice' of type '{choice.type}' needs 'tools'", param="tool_choice")
        if choice.type == "tool" and choice.name not in names:
            raise InvalidRequest(
                f"'tool_choice.name' must name one of 'tools' (got {choice.name!r})", param="tool_choice.name"
            )

    @staticmethod
    def _check_tool(index: int, tool: ToolDefinition) -> str:
        where = f"tools[{index}]"
        if tool.type not in (None, "custom"):
            raise InvalidRequest(
                f"{where} is a '{tool.type}' tool, which Anthropic runs on its servers; only client tools "
                "(name, description, input_schema) are supported",
                param=f"{where}.type",
            )
        if tool.input_schema is None:
            raise InvalidRequest(f"'{where}.input_schema' is required", param=f"{where}.input_schema")
        if tool.strict:
            raise InvalidRequest(
                f"'{where}.strict' is not supported: tool inputs are not guaranteed to match the schema",
                param=f"{where}.strict",
            )
        return tool.name

    def tool_plan(self, tool_format: ToolCallFormat) -> ToolPlan:
        """The request's tools, read in the server's `tool_format` (`ChatTemplate.tool_call_format`)."""
        if not self.tools:
            return ToolPlan()
        choice = self.tool_choice or ToolChoice(type="auto")
        return ToolPlan.from_request(
            [t.to_template() for t in self.tools],
            choice.to_openai(),
            parallel_tool_calls=not choice.disable_parallel_tool_use,
            tool_format=tool_format,
        )

    def chat_input(self, plan: ToolPlan) -> ChatInput:
        """The conversation as the pipeline renders it (a forced call's start or a last assistant
        message pre-filled)."""
        messages, prefill, images = self._template_messages()
        if prefill and plan.prefill:
            raise InvalidRequest(
                "a last assistant message (a pre-fill) cannot be combined with a forced 'tool_choice'",
                param="tool_choice",
            )
        kwargs = {} if self.thinking is None else {"enable_thinking": self.thinking.is_on}
        return ChatInput(
            messages,
            template_kwargs=plan.template_kwargs(kwargs),
            prefill=plan.prefill or prefill,
            images=tuple(images),
        )

    def reasoning_parser(self, server_parser: ReasoningParserName | None) -> ReasoningParserName | None:
        """The server's --reasoning-parser; with thinking enabled and none set, qwen3's `<think>` tags."""
        if server_parser is not None:
            return server_parser
        return "qwen3" if self.thinking is not None and self.thinking.is_on else None

    def _system_texts(self) -> list[str]:
        """`system`, then the text of any `system`-role message (some clients send them; vLLM hoists
        them too): one system message, where every template accepts it."""
        texts = [self.system] if isinstance(self.system, str) else [b.text for b in self.system or ()]
        for index, message in enumerate(self.messages):
            if message.role != "system":
                continue
            for j, block in enumerate(message.blocks()):
                if not isinstance(block, TextBlock):
                    raise _unsupported(block.type, "system", f"messages[{index}].content[{j}]")
                texts.append(block.text)
        return texts

    def _template_messages(self) -> tuple[list[dict[str, Any]], str, list[ImagePart]]:
        system = [text for text in self._system_texts() if not text.startswith(BILLING_HEADER)]
        out = [{"role": "system", "content": "\n".join(system)}] if system else []
        turns = [(i, m) for i, m in enumerate(self.messages) if m.role != "system"]
        prefill = ""
        if turns and turns[-1][1].role == "assistant":
            index, last = turns.pop()
            prefill = _prefill_text(last, index)
        images: list[ImagePart] = []
        for index, message in turns:
            if message.role == "assistant":
                out.append(_assistant_turn(message, index))
            else:
                out.extend(_user_turns(message, index, images))
        return out, prefill, images


class MessagesRequest(_Conversation):
    max_tokens: StrictInt = Field(ge=1)
    stop_sequences: list[Annotated[StrictStr, Field(min_length=1)]] | None = Field(None, max_length=16)
    temperature: Number | None = Field(None, ge=0.0, le=1.0)
    top_p: Number | None = Field(None, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(None, ge=0)
    stream: StrictBool = False
    metadata: dict[str, Any] | None = None

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,  # Anthropic's default
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            stop=tuple(self.stop_sequences or ()),
        )


class CountTokensRequest(_Conversation):
    """`/v1/messages/count_tokens`: the prompt `/v1/messages` would render, counted."""


# -- turns -------------------------------------------------------------------------------------------
def _user_turns(message: InputMessage, index: int, images: list[ImagePart]) -> list[dict[str, Any]]:
    """User text (and images) as user messages and each `tool_result` as a `tool` message, in their
    order; the images found are appended to `images`."""
    out: list[dict[str, Any]] = []
    parts: list[TextBlock | ImageBlock] = []
    for j, block in enumerate(message.blocks()):
        where = f"messages[{index}].content[{j}]"
        if isinstance(block, TextBlock):
            parts.append(block)
        elif isinstance(block, ImageBlock):
            parts.append(block)
            images.append(block.part(where))
        elif isinstance(block, ToolResultBlock):
            if parts:
                out.append(_user_message(parts))
                parts = []
            content = _result_text(block, where)
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": content})
        else:
            raise _unsupported(block.type, "user", where)
    if parts or not out:
        out.append(_user_message(parts))
    return out


def _user_message(parts: list[TextBlock | ImageBlock]) -> dict[str, Any]:
    """Text blocks joined by line breaks; with images, text and image parts in their order."""
    if all(isinstance(p, TextBlock) for p in parts):
        return {"role": "user", "content": "\n".join(p.text for p in parts if isinstance(p, TextBlock))}
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, ImageBlock):
            content.append({"type": "image"})
        elif content and content[-1]["type"] == "text":
            content[-1]["text"] += "\n" + part.text
        else:
            content.append({"type": "text", "text": part.text})
    return {"role": "user", "content": content}


def _assistant_turn(message: InputMessage, index: int) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(message.blocks()):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, ToolUseBlock):
            function = {"name": block.name, "arguments": block.input}
            calls.append({"id": block.id, "type": "function", "function": function})
        elif not isinstance(block, RedactedThinkingBlock):
            raise _unsupported(block.type, "assistant", f"messages[{index}].content[{j}]")
    turn: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if reasoning:
        turn["reasoning_content"] = "\n".join(reasoning)
    if calls:
        turn["tool_calls"] = calls
    return turn


def _prefill_text(message: InputMessage, index: int) -> str:
    """A last assistant message: the text the answer continues."""
    turn = _assistant_turn(message, index)
    if "tool_calls" in turn:
        raise InvalidRequest(
            "the last message is an assistant 'tool_use': send its 'tool_result' in a user message",
            param=f"messages[{index}]",
        )
    return turn["content"]


def _result_text(block: ToolResultBlock, where: str) -> str:
    if block.content is None or isinstance(block.content, str):
        return block.content or ""
    texts = []
    for k, part in enumerate(block.content):
        if not isinstance(part, TextBlock):
            raise _unsupported(part.type, "tool_result", f"{where}.content[{k}]")
        texts.append(part.text)
    return "\n".join(texts)


def _unsupported(block_type: str, place: str, param: str) -> InvalidRequest:
    if block_type == "document":
        return InvalidRequest("'document' blocks are not supported: the model reads text only", param=param)
    if block_type == "image":
        return InvalidRequest(
            f"{param}: 'image' blocks are accepted in user content only, not in {place}", param=param
        )
    return InvalidRequest(f"'{block_type}' blocks are not allowed in {place} content", param=param)
