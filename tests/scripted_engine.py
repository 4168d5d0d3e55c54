"""`ScriptedEngine`: the Engine protocol replaying fixed outputs, one piece per delta.

For testing what faces and parsers do with a given output (a tag split across deltas, a cut inside
the thinking, an error mid-stream) without a model. It is an addition to the real-model tests, never a
replacement: it cannot tell whether a real engine produces such output.

The tokenizer is trivial: one token per UTF-8 byte, no special tokens. Each piece of a script counts
as one generated token, so `max_tokens` cuts a script after that many pieces (finish `length`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx
import httpx2

from llmhost.errors import ContextLengthExceeded, EngineError, ModelNotLoaded
from llmhost.types import Delta, EngineInfo, EngineStats, FinishReason, SamplingParams, Usage

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Script:
    """One sequence's output. `pieces` may hold an Exception: the stream raises it at that point."""

    pieces: list[str | Exception]
    finish_reason: FinishReason = FinishReason.STOP


@dataclass
class Call:
    """What one `generate()` received (for assertions on prompts and sampling)."""

    prompt_text: str
    params: SamplingParams


@dataclass
class ScriptedEngine:
    chat_template: str = CHATML
    max_model_len: int = 4096
    default: Script = field(default_factory=lambda: Script(["ok"]))
    piece_delay_s: float = 0.0
    max_num_seqs: int = 8  # what info() reports; scripted_client sets it from the app's --max-num-seqs
    calls: list[Call] = field(default_factory=list)
    num_starts: int = 0
    _queue: deque[Script] = field(default_factory=deque)
    _is_running: bool = False
    _num_running: int = 0

    def queue(self, *scripts: Script | list[str | Exception]) -> None:
        """Outputs for the next `generate()` calls, in order (then `default` again)."""
        for s in scripts:
            self._queue.append(s if isinstance(s, Script) else Script(list(s)))

    # -- the Engine protocol ---------------------------------------------------------------------
    async def start(self) -> None:
        if not self._is_running:
            self._is_running = True
            self.num_starts += 1

    async def close(self) -> None:
        self._is_running = False

    def generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[Delta]:
        if not self._is_running:
            raise ModelNotLoaded("the engine is not running")
        if len(prompt_tokens) + (params.max_tokens or 1) > self.max_model_len:
            raise ContextLengthExceeded(f"the prompt does not fit in {self.max_model_len} tokens")
        self.calls.append(Call(self.detokenize(prompt_tokens), params))
        script = self._queue.popleft() if self._queue else self.default
        return self._replay(script, len(prompt_tokens), params)

    async def _replay(self, script: Script, num_prompt: int, params: SamplingParams) -> AsyncIterator[Delta]:
        pieces = list(script.pieces)
        finish = script.finish_reason
        if params.max_tokens is not None and len(pieces) > params.max_tokens:
            pieces, finish = pieces[: params.max_tokens], FinishReason.LENGTH
        self._num_running += 1
        try:
            for i, piece in enumerate(pieces):
                await asyncio.sleep(self.piece_delay_s)  # let other streams interleave
                if not self._is_running:
                    raise EngineError("the engine is shutting down")
                if isinstance(piece, Exception):
                    raise piece
                delta = Delta(text=piece, token_ids=[i])
                if i == len(pieces) - 1:
                    delta.finish_reason = finish
                    delta.usage = Usage(num_prompt, len(pieces))
                yield delta
            if not pieces:
                yield Delta(finish_reason=finish, usage=Usage(num_prompt, 0))
        finally:
            self._num_running -= 1

    def attach_listener(self, listener: object) -> None:
        """In-process: never goes down by itself."""

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return bytes(token_ids).decode("utf-8", "replace")

    def info(self) -> EngineInfo:
        return EngineInfo(
            engine="scripted",
            model_path="/dev/null",
            model_name="scripted",
            max_model_len=self.max_model_len,
            max_num_seqs=self.max_num_seqs,
            device="cpu",
            model_size_bytes=1234,
            vocab_size=256,
            chat_template=self.chat_template,
            bos_token="",
            eos_token="<|im_end|>",
        )

    def stats(self) -> EngineStats:
        return EngineStats(self._num_running, 0, 0.0, 0, 0)


@contextlib.asynccontextmanager
async def scripted_client(
    engine: ScriptedEngine, *, served_names: Sequence[str] = ("scripted",), **settings: object
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process app around `engine`, loaded, with an httpx client on it.

    ASGITransport does not run the lifespan, so the model is loaded here, as the lifespan would.
    """
    from llmhost.app import create_app
    from llmhost.config import Settings

    app_settings = Settings(**settings)
    engine.max_num_seqs = app_settings.max_num_seqs  # as a real engine sizes itself from the settings
    app = create_app(app_settings, engine, served_names=list(served_names))
    queued, engine._queue = engine._queue, deque()  # the load's readiness check gets `default`
    await app.state.llmhost.load_model()
    engine._queue = queued
    engine.calls.clear()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scripted") as client:
        client.app = app  # type: ignore[attr-defined]
        yield client
    await engine.close()


def sdk_transport_client(client: httpx.AsyncClient, base_url: str = "http://scripted") -> httpx2.AsyncClient:
    """An httpx2 client on the in-process app of `client` (from `scripted_client`): the official SDKs
    (`openai`, `anthropic`) speak httpx2, so they need a transport of their own."""
    transport = httpx2.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    return httpx2.AsyncClient(transport=transport, base_url=base_url)
