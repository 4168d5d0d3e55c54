"""Fallback chains: `--model A --fallback-model B --engine vllm,llama.cpp` tries (A, vllm), (A, llama.cpp),
(B, vllm), (B, llama.cpp) in order, serves the first that loads and generates, and remembers why each
earlier one failed (reported at start-up and in `/api/v1/model/info`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmhost.engines.base import Engine, EngineListener
from llmhost.errors import ModelLoadError, ModelNotLoaded
from llmhost.types import Delta, EngineInfo, EngineStats, PromptImage, SamplingParams

log = logging.getLogger("llmhost.engines")


@dataclass(frozen=True)
class Candidate:
    engine: str
    model: str | None  # as given on the command line; None = the embedded model


@dataclass(frozen=True)
class Failure:
    engine: str
    model: str | None
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "model": self.model or "(embedded)", "error": self.error}


class FallbackEngine:
    """An `Engine` that is the first candidate of its chain that loads."""

    def __init__(self, candidates: Sequence[Candidate], build: Callable[[Candidate], Engine]) -> None:
        if not candidates:
            raise ValueError("a fallback chain needs at least one candidate")
        self.candidates = list(candidates)
        self._build = build
        self._chosen: Engine | None = None
        self.chosen: Candidate | None = None
        self.failures: list[Failure] = []
        self._listener: EngineListener | None = None
        self._info: EngineInfo | None = None

    @property
    def name(self) -> str:
        return self.chosen.engine if self.chosen is not None else "fallback chain"

    def attach_listener(self, listener: EngineListener) -> None:
        self._listener = listener

    async def start(self) -> None:
        if self._chosen is not None:
            return
        self.failures = []
        for i, cand in enumerate(self.candidates):
            label = f"{cand.engine} with {cand.model or 'the embedded model'}"
            engine: Engine | None = None
            try:
                # Building may convert a model (GGUF → HF for vLLM, a minute or more): off the event loop.
                engine = await asyncio.to_thread(self._build, cand)
                if self._listener is not None:
                    engine.attach_listener(self._listener)
                await engine.start()
                await _prove_generation(engine)
            except Exception as exc:
                error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
                self.failures.append(Failure(cand.engine, cand.model, error))
                more = "; trying the next" if i + 1 < len(self.candidates) else ""
                log.warning("fallback chain: %s failed (%s)%s", label, error, more)
                if engine is not None:
                    try:
                        await engine.close()
                    except Exception:
                        log.exception("closing the failed %s", label)
                continue
            self._chosen, self.chosen = engine, cand
            # Once, not per request: the chosen engine's info with the chain's report riding along.
            self._info = dataclasses.replace(engine.info(), load_report=self.load_report())
            if self.failures:
                log.warning(
                    "fallback chain: serving %s after %d failure(s): %s",
                    label,
                    len(self.failures),
                    " | ".join(f"{f.engine}/{f.model or 'embedded'}: {f.error}" for f in self.failures),
                )
            else:
                log.info("fallback chain: serving %s (the first choice)", label)
            return
        raise ModelLoadError(
            "no engine and model of the chain loaded: "
            + " | ".join(f"{f.engine} with {f.model or 'embedded'}: {f.error}" for f in self.failures)
        )

    def load_report(self) -> dict[str, Any]:
        """For /api/v1/model/info: what is served and why the earlier candidates were not."""
        return {
            "chosen_engine": self.chosen.engine if self.chosen else None,
            "chosen_model": (self.chosen.model or "(embedded)") if self.chosen else None,
            "candidates": [{"engine": c.engine, "model": c.model or "(embedded)"} for c in self.candidates],
            "fallback_failures": [f.as_dict() for f in self.failures],
        }

    def _engine(self) -> Engine:
        if self._chosen is None:
            raise ModelNotLoaded("the model is not loaded yet")
        return self._chosen

    # -- the Engine protocol, delegated ------------------------------------------------------------
    def generate(
        self,
        prompt_tokens: Sequence[int],
        params: SamplingParams,
        request_id: str | None = None,
        *,
        images: Sequence[PromptImage] = (),
    ) -> AsyncIterator[Delta]:
        if images:  # only when the chosen engine takes images (its info says so)
            return self._engine().generate(prompt_tokens, params, request_id, images=images)  # type: ignore[call-arg]
        return self._engine().generate(prompt_tokens, params, request_id)

    def prepare_image(self, image: Any) -> PromptImage:
        return self._engine().prepare_image(image)  # type: ignore[attr-defined]

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self._engine().tokenize(text, add_special=add_special)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._engine().detokenize(token_ids)

    def info(self) -> EngineInfo:
        self._engine()  # ModelNotLoaded until a candidate is chosen
        assert self._info is not None
        return self._info

    def stats(self) -> EngineStats:
        if self._chosen is None:
            return EngineStats(0, 0, 0.0, 0, 0)
        return self._chosen.stats()

    async def close(self) -> None:
        engine, self._chosen, self.chosen = self._chosen, None, None
        if engine is not None:
            await engine.close()


async def _prove_generation(engine: Engine) -> None:
    """A candidate "loads" when it generates: one greedy token, as the server's readiness check does."""
    tokens = engine.tokenize("Hello")
    stream = engine.generate(tokens, SamplingParams(max_tokens=1, temperature=0.0))
    try:
        async for _ in stream:
            pass
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
