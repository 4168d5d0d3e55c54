"""The one interface between llmhost and anything that turns tokens into tokens.

Faces and the conversation layer talk to engines only through this protocol, so any engine
(in-process llama.cpp, transformers, a supervised vLLM) can sit under every face.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llmhost.types import Delta, EngineInfo, EngineStats, PromptImage, SamplingParams

if TYPE_CHECKING:
    from PIL.Image import Image


class EngineListener(Protocol):
    """What the server state hears from an engine that can go down and come back by itself (a
    supervised engine server that is restarted)."""

    def engine_down(self, reason: str) -> None: ...

    def engine_up(self) -> None: ...

    def engine_restarted(self, label: str) -> None: ...


@runtime_checkable
class Engine(Protocol):
    async def start(self) -> None:
        """Load the model and begin accepting work. Idempotent."""

    def generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[Delta]:
        """Stream the deltas of one sequence. Closing the iterator early cancels the sequence.

        Raises `ContextLengthExceeded` (before the first delta) when the prompt plus `max_tokens`
        does not fit in `info().max_model_len`.
        """
        ...

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Text to token ids; special-token text (e.g. `<|im_start|>`) is parsed as the special token."""
        ...

    def detokenize(self, token_ids: Sequence[int]) -> str: ...

    def info(self) -> EngineInfo: ...

    def stats(self) -> EngineStats: ...

    async def close(self) -> None:
        """Cancel all work and release the model."""

    def attach_listener(self, listener: EngineListener) -> None:
        """Whom to tell when the engine stops serving by itself and when it serves again. An engine that
        cannot go down on its own (in-process) keeps no listener."""


class ImageEngine(Engine, Protocol):
    """An engine whose `info().accepts_images` is true. The pipeline calls `prepare_image` for each
    decoded image of a prompt (off the event loop), writes that many `image_token_id`s where the chat
    template placed the image, and passes the prepared images with the prompt to `generate`. Other
    engines are never handed an image: a request with one is refused before it reaches them."""

    def prepare_image(self, image: Image) -> PromptImage:
        """Resize and encode one RGB image the way the model reads it; raises `InvalidRequest` for an
        image the model cannot take (an extreme aspect ratio, say)."""
        ...

    def generate(
        self,
        prompt_tokens: Sequence[int],
        params: SamplingParams,
        request_id: str | None = None,
        *,
        images: Sequence[PromptImage] = (),
    ) -> AsyncIterator[Delta]:
        """As `Engine.generate`; `images` are the prompt's, in order, each with its `offset`."""
        ...
