"""What a request asks the model to continue, and turning it into tokens without stalling the server.

Faces hand over one of three inputs: a conversation (`ChatInput`, rendered with the model's chat
template), raw text (`TextInput`, tokenized with the model's BOS) or token ids (`TokenInput`, taken as
they are). `PromptPreparer` turns them into `PreparedPrompt`s:

- Cheap refusals first: more messages than `--max-messages`, or more characters than the context could
  ever hold (no token spells more than the vocabulary's longest piece, so a text longer than
  `max_model_len x longest piece` cannot fit) — a 400 before anything is rendered or tokenized.
- Rendering and tokenizing a large input run on a small thread pool, never on the event loop: a chat
  template over thousands of messages, or llama.cpp's tokenizer on text with many special tokens (it
  grows with their square), can take seconds, and `/health`, `/metrics` and every other client must not
  wait for it. Small inputs (the usual case) are prepared inline, which costs less than a thread hop.
- Images (a `ChatInput`'s `images`) are refused at once by a model that reads text only, then loaded
  and decoded (`llmhost/media`), prepared by the engine and placed in the prompt (`image_prompts.py`)
  on the thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmhost.context_window import ensure_fits
from llmhost.conversation.reasoning import answer_prefill, prompt_opens_thinking
from llmhost.conversation.template import ChatTemplate
from llmhost.engines.base import Engine
from llmhost.errors import InvalidRequest
from llmhost.media import ImageLimits, ImagePart, load_images
from llmhost.pipeline.image_prompts import place_images, prepare_images, refuse_images_unless_accepted
from llmhost.types import PromptImage

# Inputs up to this many characters (and messages) are prepared on the event loop: measured on the
# embedded model, 16k characters render and tokenize in about 2 ms.
INLINE_MAX_CHARS = 16_384
INLINE_MAX_MESSAGES = 64
PREPARE_WORKERS = 4  # threads; tokenizers release the GIL, templates hold it only between switches


@dataclass(frozen=True)
class ChatInput:
    """A conversation in chat-template form (`{"role", "content", …}` dicts). Content is a string, or,
    in a message with images, a list of `{"type": "text", "text"}` and `{"type": "image"}` parts (the
    form vision models' templates read); `images` are those images' sources, in the same order."""

    messages: list[dict[str, Any]]
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    add_generation_prompt: bool = True
    # Text the answer is made to start with (a forced tool call's opening): appended to the prompt's
    # tokens, not to its rendered text; a think block the template opened is closed before it.
    prefill: str = ""
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True)
class TextInput:
    """Raw text, no chat template (`/v1/completions`): tokenized with the model's BOS unless
    `add_special` is false."""

    text: str
    add_special: bool = True


@dataclass(frozen=True)
class TokenInput:
    """Token ids sent by the client (`/v1/completions` with a list of ints), used as they are."""

    token_ids: list[int]
    # Detokenize them for `PreparedPrompt.text` (`echo`); otherwise that is work nobody reads.
    needs_text: bool = False


PromptInput = ChatInput | TextInput | TokenInput


@dataclass(frozen=True)
class PreparedPrompt:
    token_ids: list[int]
    text: str  # the rendered conversation, the raw text, or the detokenized ids (when asked for)
    opens_thinking: bool = False  # the template opened a think block: the answer starts inside it
    images: tuple[PromptImage, ...] = ()  # prepared by the engine, placed at their offsets in token_ids

    def __len__(self) -> int:
        return len(self.token_ids)


class PromptPreparer:
    def __init__(
        self,
        engine: Engine,
        template: Callable[[], ChatTemplate],
        *,
        max_messages: int,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self._engine = engine
        self._template = template  # the loaded model's template (raises ModelNotLoaded before)
        self._max_messages = max_messages
        self._image_limits = image_limits or ImageLimits()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            PREPARE_WORKERS, thread_name_prefix="llmhost-prepare"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def prepare(
        self,
        inputs: Sequence[PromptInput],
        *,
        param: str,
        batch_noun: str | None = None,
        indices: Sequence[int] | None = None,
    ) -> list[PreparedPrompt]:
        """The inputs as token ids, or a 400 (`param` names the request field) when they cannot fit."""
        num_messages = max((len(i.messages) for i in inputs if isinstance(i, ChatInput)), default=0)
        if num_messages > self._max_messages:
            raise InvalidRequest(
                f"a conversation of {num_messages} messages; this server accepts at most "
                f"{self._max_messages} (--max-messages)",
                param=param,
            )
        sizes = [_num_chars(i) for i in inputs]
        self._refuse_what_cannot_fit(sizes, param, batch_noun, indices)
        template = self._template() if any(isinstance(i, ChatInput) for i in inputs) else None
        images = await self._load_images(inputs)
        num_total = sum(len(i.messages) if isinstance(i, ChatInput) else 1 for i in inputs)
        if sum(sizes) <= INLINE_MAX_CHARS and num_total <= INLINE_MAX_MESSAGES and not any(images):
            return [self._prepare_one(i, template, []) for i in inputs]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool,
            lambda: [
                self._prepare_one(i, template, pictures) for i, pictures in zip(inputs, images, strict=True)
            ],
        )

    async def _load_images(self, inputs: Sequence[PromptInput]) -> list[list[Any]]:
        """Each input's decoded images ([] for most); a model that reads text only refuses them first."""
        parts = [i.images if isinstance(i, ChatInput) else () for i in inputs]
        if not any(parts):
            return [[] for _ in inputs]
        refuse_images_unless_accepted(next(p for p in parts if p), self._engine.info())
        return [await load_images(p, self._image_limits) if p else [] for p in parts]

    def _refuse_what_cannot_fit(
        self, sizes: list[int], param: str, batch_noun: str | None, indices: Sequence[int] | None
    ) -> None:
        info = self._engine.info()
        if info.max_token_bytes is None:
            return
        # A lower bound on each prompt's tokens: it cannot be shorter than this.
        least_tokens = [-(-chars // info.max_token_bytes) for chars in sizes]
        if max(least_tokens, default=0) >= info.max_model_len:
            ensure_fits(
                least_tokens,
                [None] * len(sizes),
                info.max_model_len,
                param=param,
                batch_noun=batch_noun,
                is_lower_bound=True,
                indices=indices,
            )

    def _prepare_one(
        self, item: PromptInput, template: ChatTemplate | None, images: list[Any]
    ) -> PreparedPrompt:
        engine = self._engine
        if isinstance(item, TokenInput):
            vocab_size = engine.info().vocab_size  # an id outside it must never reach the tokenizer
            if any(not 0 <= t < vocab_size for t in item.token_ids):
                raise InvalidRequest("the prompt has token ids outside the vocabulary", param="prompt")
            text = engine.detokenize(item.token_ids) if item.needs_text else ""
            return PreparedPrompt(list(item.token_ids), text)
        if isinstance(item, TextInput):
            return PreparedPrompt(engine.tokenize(item.text, add_special=item.add_special), item.text)
        assert template is not None
        text = template.render(
            item.messages, add_generation_prompt=item.add_generation_prompt, **item.template_kwargs
        )
        opens_thinking = prompt_opens_thinking(text)
        prefill = answer_prefill(item.prefill, opens_thinking)
        token_ids = engine.tokenize(text + prefill)
        if not images:
            return PreparedPrompt(token_ids, text, opens_thinking)
        image_token_id = engine.info().image_token_id
        assert image_token_id is not None  # refused earlier by an engine that takes no images
        prepared = prepare_images(engine, images, item.images)
        token_ids, placed = place_images(token_ids, prepared, image_token_id, item.images)
        return PreparedPrompt(token_ids, text, opens_thinking, placed)


def _num_chars(item: PromptInput) -> int:
    if isinstance(item, TokenInput):
        return 0
    if isinstance(item, TextInput):
        return len(item.text)
    return len(item.prefill) + sum(_message_chars(m) for m in item.messages)


def _message_chars(message: dict[str, Any]) -> int:
    content = message.get("content")
    if isinstance(content, list):  # text and image parts
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return len(content) if isinstance(content, str) else 0
