"""The generation service: the one path from a request in internal types to the engine and back.

    faces (wire ⇄ internal)  →  GenerationService.start(GenerationRequest)  →  Engine.generate
                                  1. prepare: render + tokenize (prompts.py: limits, off the event loop)
                                  2. fit: the one context check (context_window.py), or cut max_tokens
                                  3. admit every sequence or none (admission.py: 429, deadline, metrics)
                                  4. start each sequence: an engine generation, or a driver (the code loop)
                             ←  Generation: merged deltas, collect-until-disconnect, usage

Faces translate their wire format to a `GenerationRequest` and the `Generation`'s deltas back; they never
render, count, admit or time out anything themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from starlette.types import Receive

from llmhost.context_window import completion_room, ensure_fits
from llmhost.conversation.template import ChatTemplate
from llmhost.engines.base import Engine
from llmhost.errors import InvalidRequest
from llmhost.media import ImageLimits
from llmhost.pipeline.admission import Admission, TrackedStream, open_streams
from llmhost.pipeline.fanout import collect, merge_streams
from llmhost.pipeline.prompts import PreparedPrompt, PromptInput, PromptPreparer
from llmhost.server.metrics import ServerMetrics
from llmhost.types import Delta, EngineInfo, FinishReason, SamplingParams, Usage

log = logging.getLogger("llmhost.pipeline")

# Runs one sequence in place of a single engine generation: (its prompt, its sampling, its id) → deltas.
Driver = Callable[[PreparedPrompt, SamplingParams, str], AsyncIterator[Delta]]


class Fit(StrEnum):
    """What must fit the context, checked before admission."""

    WHOLE = "whole"  # the prompt and `max_tokens` (OpenAI's rule; None asks for one token at least)
    CLAMP = "clamp"  # the prompt, with room left; `max_tokens` is cut to that room (/predict)
    PROMPT = "prompt"  # the prompt, with room left; a driver budgets the rest (the code loop)


@dataclass(frozen=True)
class GenerationRequest:
    prompts: Sequence[PromptInput]
    # Per prompt, one SamplingParams per sequence to run on it (`n` choices of one chat, a batch's items).
    sampling: Sequence[Sequence[SamplingParams]]
    fit: Fit = Fit.WHOLE
    param: str = "messages"  # the request field errors about the prompts name
    batch_noun: str | None = None  # "prompt", "item": errors name each failing index with it
    batch_indices: Sequence[int] | None = None  # the index to name per prompt (default: its position)
    request_id: str | None = None
    driver: Driver | None = None


class Generation:
    """The running sequences of one request. Iterate `deltas()` (stream) or await `collect()`; both
    close every sequence when left early. `usage()` is the request's token count, kept as deltas pass."""

    def __init__(
        self,
        request_id: str,
        prompts: list[PreparedPrompt],
        prompt_of: list[int],
        streams: list[TrackedStream],
    ) -> None:
        self.request_id = request_id
        self.prompts = prompts
        self.prompt_of = prompt_of  # sequence index → index of its prompt
        self.streams = streams
        # The engine's (or driver's) own count, from each sequence's last delta; None until it ends.
        self.final_usages: list[Usage | None] = [None] * len(streams)
        self._num_seen = [0] * len(streams)  # tokens seen in deltas: the count for a sequence cut short
        self._merged: AsyncGenerator[tuple[int, Delta], None] | None = None

    @property
    def prompt(self) -> PreparedPrompt:
        """The first (for most requests, the only) prompt."""
        return self.prompts[0]

    def deltas(self) -> AsyncIterator[tuple[int, Delta]]:
        """`(sequence index, delta)` in arrival order; the first error cancels the rest and is raised."""
        self._merged = self._merge()
        return self._merged

    async def _merge(self) -> AsyncGenerator[tuple[int, Delta], None]:
        async with contextlib.aclosing(merge_streams(self.streams)) as merged:  # closed with this one
            async for index, delta in merged:
                self._count(index, delta)
                yield index, delta

    async def collect(self, *, until_disconnected: Receive | None = None) -> list[Delta]:
        """Every sequence's whole output; a client that goes away (`until_disconnected`, the request's
        ASGI receive) cancels the work at once."""
        results = await collect(self.streams, until_disconnected=until_disconnected)
        for index, result in enumerate(results):
            self._count(index, result)
        return results

    def _count(self, index: int, delta: Delta) -> None:
        self._num_seen[index] += len(delta.token_ids)
        if delta.usage is not None:
            self.final_usages[index] = delta.usage

    def usage(self, *, prompt_per_sequence: bool) -> Usage:
        """Prompt tokens once per prompt (chat: `n` choices share one) or once per sequence
        (completions); completion tokens as the engine counted them (as seen in deltas for a sequence
        that did not end); the prefix-cache hits the engine reported (per sequence summed, else the least
        any sequence found; None when the engine does not say)."""
        if prompt_per_sequence:
            num_prompt = sum(len(self.prompts[p]) for p in self.prompt_of)
        else:
            num_prompt = sum(len(p) for p in self.prompts)
        found = [u.cached_tokens for u in self.final_usages if u is not None and u.cached_tokens is not None]
        cached = (sum(found) if prompt_per_sequence else min(found)) if found else None
        num_completion = sum(
            seen if final is None else final.completion_tokens
            for seen, final in zip(self._num_seen, self.final_usages, strict=True)
        )
        return Usage(num_prompt, num_completion, cached_tokens=cached)

    async def aclose(self) -> None:
        """Cancel whatever still runs (a reader that left `deltas()` early calls this)."""
        if self._merged is not None:
            await self._merged.aclose()  # stops the tasks that read the streams, then closes them
        for stream in self.streams:
            await stream.aclose()


class GenerationService:
    def __init__(
        self,
        engine: Engine,
        template: Callable[[], ChatTemplate],
        admission: Admission,
        metrics: ServerMetrics,
        *,
        max_messages: int,
        timeout_s: float | None,
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.engine = engine
        self.admission = admission
        self.metrics = metrics
        self._timeout_s = timeout_s
        self._preparer = PromptPreparer(
            engine, template, max_messages=max_messages, image_limits=image_limits
        )

    def info(self) -> EngineInfo:
        return self.engine.info()

    def close(self) -> None:
        self._preparer.close()

    async def prepare(
        self, prompts: Sequence[PromptInput], *, param: str = "messages"
    ) -> list[PreparedPrompt]:
        """The prompts' tokens as `start` would compute them, without generating (token counting)."""
        return await self._preparer.prepare(prompts, param=param)

    async def start(self, request: GenerationRequest) -> Generation:
        """Prepare, check, admit and start every sequence of `request`. Every refusal (a 4xx, a 429)
        happens here, before the caller has sent a byte."""
        prompts = await self._preparer.prepare(
            request.prompts, param=request.param, batch_noun=request.batch_noun, indices=request.batch_indices
        )
        if request.driver is not None and any(p.images for p in prompts):
            # A driver (the code loop) re-feeds text it extends; the images would be lost on its turns.
            raise InvalidRequest(
                "images cannot be combined with the code loop ('code_tools') yet", param="code_tools"
            )
        sampling = self._fit(request, prompts)
        info = self.engine.info()
        for params in (s for per_prompt in sampling for s in per_prompt):
            params.check_token_ids(info.vocab_size)  # now: a driver (the code loop) generates only later
            if params.prompt_logprobs is not None:
                self._check_prompt_scores(info, prompts)
        request_id = request.request_id or uuid.uuid4().hex
        prompt_of = [p for p, params in enumerate(sampling) for _ in params]
        flat = [params for per_prompt in sampling for params in per_prompt]
        starts = [
            (len(prompts[p]), self._starter(request.driver, prompts[p], params, f"{request_id}-{i}"))
            for i, (p, params) in enumerate(zip(prompt_of, flat, strict=True))
        ]
        streams = open_streams(self.admission, self.metrics, starts, timeout_s=self._timeout_s)
        return Generation(request_id, prompts, prompt_of, streams)

    @staticmethod
    def _check_prompt_scores(info: EngineInfo, prompts: list[PreparedPrompt]) -> None:
        """A 400 for prompt log-probabilities an engine cannot compute (never a silent answer without)."""
        if not info.supports_prompt_logprobs:
            raise InvalidRequest(
                f"the {info.engine} engine cannot return the prompt's log-probabilities "
                "('prompt_logprobs', or 'echo' with 'logprobs')",
                param="prompt_logprobs",
            )
        if any(p.images for p in prompts):  # an image's placeholder tokens have no next-token scores
            raise InvalidRequest(
                "the prompt's log-probabilities cannot be combined with images yet", param="prompt_logprobs"
            )

    def _starter(
        self, driver: Driver | None, prompt: PreparedPrompt, params: SamplingParams, sequence_id: str
    ) -> Callable[[], AsyncIterator[Delta]]:
        if driver is not None:
            return lambda: driver(prompt, params, sequence_id)
        if params.max_tokens == 0 and params.prompt_logprobs is None:
            return lambda: _prompt_only(len(prompt))  # an echo of the prompt asks the engine nothing
        if prompt.images:  # only an ImageEngine gets here: the preparer refused images for the others
            return lambda: self.engine.generate(prompt.token_ids, params, images=prompt.images)  # type: ignore[call-arg]
        return lambda: self.engine.generate(prompt.token_ids, params)

    def _fit(self, request: GenerationRequest, prompts: list[PreparedPrompt]) -> list[list[SamplingParams]]:
        max_model_len = self.engine.info().max_model_len
        lengths = [len(p) for p in prompts]
        named = list(request.batch_indices or range(len(prompts)))
        if request.fit == Fit.WHOLE:
            ensure_fits(
                [lengths[p] for p, params in enumerate(request.sampling) for _ in params],
                [s.max_tokens for params in request.sampling for s in params],
                max_model_len,
                param=request.param,
                batch_noun=request.batch_noun,
                indices=[named[p] for p, params in enumerate(request.sampling) for _ in params],
            )
            return [list(params) for params in request.sampling]
        ensure_fits(
            lengths,
            [None] * len(lengths),
            max_model_len,
            param=request.param,
            batch_noun=request.batch_noun,
            indices=named,
        )
        if request.fit == Fit.PROMPT:
            return [list(params) for params in request.sampling]
        fitted: list[list[SamplingParams]] = []
        for length, params in zip(lengths, request.sampling, strict=True):
            room = completion_room(length, max_model_len)
            fitted.append(
                [
                    s
                    if s.max_tokens is None or s.max_tokens <= room
                    else dataclasses.replace(s, max_tokens=room)
                    for s in params
                ]
            )
        num_cut = sum(f != list(p) for f, p in zip(fitted, request.sampling, strict=True))
        if num_cut:
            log.warning(
                "%d of %d prompt(s) leave less room in the context than asked; their answers are cut shorter",
                num_cut,
                len(prompts),
            )
        return fitted


async def _prompt_only(num_prompt_tokens: int) -> AsyncIterator[Delta]:
    """A sequence with `max_tokens` 0 and nothing to read from the prompt: it ends at once."""
    yield Delta(finish_reason=FinishReason.LENGTH, usage=Usage(num_prompt_tokens, 0))
