"""Responses API input items (messages, function calls and their outputs, reasoning) and what they become
in the chat template: `template_messages`.

`instructions` become a first system message (routes.py), `developer` messages system messages, each
run of assistant-side items (an assistant message, its `function_call`s, `reasoning` among them) one
assistant turn with OpenAI-style `tool_calls` and `reasoning_content`, and each `function_call_output` a
`tool` message. A stored response's output comes back as items of the same kinds (`as_input_items`), so
a conversation continued with `previous_response_id` renders as if the client had sent it all.

`input_image` parts of user messages are images for a vision model: in the template they are the
`{"type": "image"}` parts vision templates read, and `image_parts` names each for the pipeline, which
reads them as the chat face's (llmhost/media) and refuses them for a model that reads text only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, StrictStr, Tag, TypeAdapter

from llmhost.errors import InvalidRequest
from llmhost.media import ImagePart


class RequestModel(BaseModel):
    """Strict (a string is no number), unknown fields ignored (newer SDKs add some)."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


# -- content parts -----------------------------------------------------------------------------------
class TextPart(RequestModel):
    """Text in a message: `input_text` (user, system, developer) or `output_text` (assistant)."""

    type: Literal["input_text", "output_text"]
    text: StrictStr


class RefusalPart(RequestModel):
    type: Literal["refusal"]
    refusal: StrictStr


class InputImagePart(RequestModel):
    """An image in a user message, by URL: a base64 `data:` URL, a `file://` URL under
    `--allowed-local-media-path`, an `http(s)` URL with `--allow-remote-images` (docs/api.md#images)."""

    type: Literal["input_image"]
    image_url: StrictStr | None = None
    file_id: StrictStr | None = None  # an uploaded file: this server keeps none (a 400)
    detail: StrictStr | None = None  # accepted; the model's image processor sizes the image


class OtherPart(RequestModel):
    """Files, audio: the model reads text (and images) only (a 400 names the part)."""

    type: StrictStr


def _part_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("input_text", "output_text", "refusal", "input_image") else "other"


ContentPart = Annotated[
    Annotated[TextPart, Tag("input_text")]
    | Annotated[TextPart, Tag("output_text")]
    | Annotated[RefusalPart, Tag("refusal")]
    | Annotated[InputImagePart, Tag("input_image")]
    | Annotated[OtherPart, Tag("other")],
    Discriminator(_part_kind),
]


def _parts_text(parts: StrictStr | Sequence[Any]) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(p.text if isinstance(p, TextPart) else p.refusal for p in parts if _is_text(p))


def _is_text(part: Any) -> bool:
    return isinstance(part, TextPart | RefusalPart)


def _template_content(parts: StrictStr | Sequence[Any]) -> str | list[dict[str, Any]]:
    """A string, or with images the text and image parts in order (what vision templates read)."""
    if isinstance(parts, str) or not any(isinstance(p, InputImagePart) for p in parts):
        return _parts_text(parts)
    return [
        {"type": "image"} if isinstance(p, InputImagePart) else {"type": "text", "text": _parts_text([p])}
        for p in parts
        if isinstance(p, InputImagePart) or _is_text(p)
    ]


def _check_parts(parts: StrictStr | Sequence[Any], where: str, role: str | None) -> None:
    for j, part in enumerate(() if isinstance(parts, str) else parts):
        if isinstance(part, OtherPart):
            raise InvalidRequest(
                f"'{part.type}' content is not supported: the model reads text and images only",
                param=f"{where}[{j}]",
            )
        if isinstance(part, InputImagePart):
            if role != "user":
                raise InvalidRequest(
                    f"images are accepted in user messages only, not in {role or 'function_call_output'}",
                    param=f"{where}[{j}]",
                )
            if part.image_url is None:
                raise InvalidRequest(
                    "an input_image needs its image_url (a base64 data: URL); this server keeps no uploaded "
                    "files for a file_id",
                    param=f"{where}[{j}]",
                )


# -- input items -------------------------------------------------------------------------------------
class MessageItem(RequestModel):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: StrictStr | list[ContentPart]


class FunctionCallItem(RequestModel):
    type: Literal["function_call"]
    call_id: StrictStr
    name: StrictStr
    arguments: StrictStr  # JSON text, as the model wrote it


class FunctionCallOutputItem(RequestModel):
    type: Literal["function_call_output"]
    call_id: StrictStr
    output: StrictStr | list[ContentPart]


class ReasoningText(RequestModel):
    type: StrictStr
    text: StrictStr


class ReasoningItem(RequestModel):
    """A model's earlier reasoning, sent back. Its `content` (the reasoning text this server returns)
    reaches the template as the next assistant turn's `reasoning_content`; summaries and encrypted
    content (OpenAI's own models) are accepted and not rendered."""

    type: Literal["reasoning"]
    content: list[ReasoningText] | None = None


class OtherItem(RequestModel):
    """An item of a kind this server cannot take (built-in tool calls, item references…): a 400."""

    type: StrictStr


def _item_kind(value: Any) -> str:
    if isinstance(value, dict):
        kind = value.get("type", "message" if "role" in value else None)  # EasyInputMessage has no type
    else:  # an item already validated (when it is serialized)
        kind = getattr(value, "type", None)
    return kind if kind in ("message", "function_call", "function_call_output", "reasoning") else "other"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]


_ITEMS = TypeAdapter(list[InputItem])


def as_input_items(output: Iterable[dict[str, Any]]) -> list[Any]:
    """A response's output items (their wire form) as the input items a next turn would send."""
    return _ITEMS.validate_python(list(output))


def check_items(items: Sequence[Any]) -> None:
    """400, naming the item, for input this server cannot take: other item kinds, non-text content."""
    for i, item in enumerate(items):
        if isinstance(item, OtherItem):
            raise InvalidRequest(
                f"input items of type '{item.type}' are not supported (messages, function_call, "
                "function_call_output and reasoning are)",
                param=f"input[{i}].type",
            )
        if isinstance(item, MessageItem):
            _check_parts(item.content, f"input[{i}].content", item.role)
        elif isinstance(item, FunctionCallOutputItem):
            _check_parts(item.output, f"input[{i}].output", None)


def image_parts(earlier: Sequence[Any], items: Sequence[Any]) -> tuple[ImagePart, ...]:
    """The images of a conversation (`earlier` turns' items, then this request's), in the order the
    template places them, each named by its part (`input[0].content[1]`; an earlier turn's by
    `previous_response_id`)."""
    out: list[ImagePart] = []
    for i, item in enumerate([*earlier, *items]):
        if isinstance(item, MessageItem) and not isinstance(item.content, str):
            for j, part in enumerate(item.content):
                if isinstance(part, InputImagePart) and part.image_url is not None:
                    where = f"input[{i - len(earlier)}].content[{j}]" if i >= len(earlier) else None
                    out.append(ImagePart(part.image_url, where or "previous_response_id"))
    return tuple(out)


def template_messages(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Input items (and earlier outputs) as the chat template's messages (see the module docstring);
    the items passed `check_supported`."""
    out: list[dict[str, Any]] = []
    turn: dict[str, Any] | None = None  # the assistant turn being built
    reasoning: list[str] = []  # reasoning waiting for the assistant item it belongs to
    for item in items:
        if isinstance(item, ReasoningItem):
            reasoning += [part.text for part in item.content or ()]
            continue
        if isinstance(item, FunctionCallItem) or (isinstance(item, MessageItem) and item.role == "assistant"):
            if turn is None:
                turn = {"role": "assistant", "content": ""}
                out.append(turn)
            if reasoning:
                turn["reasoning_content"] = _joined(turn.get("reasoning_content", ""), *reasoning)
        else:
            turn = None
        reasoning = []  # reasoning belongs to the assistant turn it comes in, or to none
        if isinstance(item, MessageItem):
            if turn is not None:
                turn["content"] = _joined(turn["content"], _parts_text(item.content))
            else:
                role = "system" if item.role == "developer" else item.role
                out.append({"role": role, "content": _template_content(item.content)})
        elif isinstance(item, FunctionCallItem) and turn is not None:
            function = {"name": item.name, "arguments": item.arguments}
            turn.setdefault("tool_calls", []).append(
                {"id": item.call_id, "type": "function", "function": function}
            )
        elif isinstance(item, FunctionCallOutputItem):
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": _parts_text(item.output)})
    return out


def _joined(*texts: str) -> str:
    return "\n".join(t for t in texts if t)
