"""The content blocks of an Anthropic Messages request (text, image, tool_use, tool_result, thinking…)
and the input message that holds them; `schemas.py` turns them into the pipeline's chat messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

from llmhost.media import ImagePart


class RequestModel(BaseModel):
    """Anthropic request models: unknown fields ignored, types strict."""

    model_config = ConfigDict(extra="ignore", strict=True)


# -- content blocks ----------------------------------------------------------------------------------
class TextBlock(RequestModel):
    type: Literal["text"]
    text: StrictStr


class Base64ImageSource(RequestModel):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: StrictStr

    def url(self) -> str:
        return f"data:{self.media_type};base64,{self.data}"


class URLImageSource(RequestModel):
    type: Literal["url"]
    url: StrictStr


class ImageBlock(RequestModel):
    type: Literal["image"]
    source: Annotated[Base64ImageSource | URLImageSource, Field(discriminator="type")]

    def part(self, param: str) -> ImagePart:
        source = self.source
        return ImagePart(source.url() if isinstance(source, Base64ImageSource) else source.url, param)


class DocumentBlock(RequestModel):
    type: Literal["document"]


class ToolUseBlock(RequestModel):
    type: Literal["tool_use"]
    id: StrictStr
    name: StrictStr
    input: dict[str, Any]


class ToolResultBlock(RequestModel):
    type: Literal["tool_result"]
    tool_use_id: StrictStr
    content: (
        StrictStr
        | list[Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]]
        | None
    ) = None
    is_error: StrictBool | None = None


class ThinkingBlock(RequestModel):
    type: Literal["thinking"]
    thinking: StrictStr


class RedactedThinkingBlock(RequestModel):
    type: Literal["redacted_thinking"]  # encrypted Claude thinking: nothing a local model can read


InputBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]


def _standard_role(role: Any) -> Any:
    # Newer Claude Code versions send `ctx` and `msg` turns; they are user turns (vLLM maps them too).
    return "user" if role in ("ctx", "msg") else role


class InputMessage(RequestModel):
    role: Annotated[Literal["user", "assistant", "system"], BeforeValidator(_standard_role)]
    content: StrictStr | list[InputBlock]

    def blocks(self) -> list[Any]:
        return [TextBlock(type="text", text=self.content)] if isinstance(self.content, str) else self.content
