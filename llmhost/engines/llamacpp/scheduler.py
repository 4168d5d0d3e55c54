"""Continuous batching over one llama.cpp context, on a thread of its own.

Every step:
1. drop sequences whose client went away (their KV slot is free again at once);
2. admit waiting sequences into free KV slots;
3. fill one batch: the next token of every decoding sequence first (decode latency is what users
   feel), then prompt chunks of prefilling sequences with the budget that is left (chunked prefill);
4. one `llama_decode` for the whole batch (it releases the GIL, so the event loop keeps serving);
5. sample each sequence that got logits with its own sampler chain, detokenize, check stops;
6. hand every delta of the step to the event loop in one call.

The design follows llama.cpp's `server` slots and vLLM's scheduler: a fixed slot per sequence (so a
sequence admitted never runs out of KV cache), decode-first token budgeting, chunked prefill.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from llmhost.engines.threaded import GenerationState, Outputs, SchedulerThread, token_delta
from llmhost.errors import EngineError
from llmhost.types import Delta, TokenLogprob

from .backend import LlamaContext, LlamaModel
from .sampler import SequenceSampler, token_logprob

log = logging.getLogger("llmhost.llamacpp")


@dataclass(eq=False)
class Sequence(GenerationState):
    """One generation request as the llama.cpp scheduler sees it: its KV slot and sampler chain too."""

    slot: int = -1
    num_cached: int = 0  # tokens of this sequence already in its KV slot
    sampler: SequenceSampler | None = None

    @property
    def is_prefilled(self) -> bool:
        return self.num_cached >= len(self.prompt)


class Scheduler(SchedulerThread):
    def __init__(self, model: LlamaModel, ctx: LlamaContext, on_outputs: Callable[[Outputs], None]):
        super().__init__("llmhost-llamacpp")
        self._model = model
        self._ctx = ctx
        self._on_outputs = on_outputs
        self._eog = frozenset(model.eog_token_ids)
        self._free_slots = list(range(ctx.config.n_seq - 1, -1, -1))
        self._running: list[Sequence] = []

    @property
    def num_slots(self) -> int:
        return self._ctx.config.n_seq

    # -- the engine thread (its loop is SchedulerThread._run) -------------------------------------
    def _step(self) -> None:
        outputs: Outputs = []
        self._drop_aborted()
        self._admit()
        if not self._running:
            return
        batch = self._ctx.batch
        batch.clear()
        sample_at: list[tuple[Sequence, int]] = []
        for seq in self._running:  # decode first: one token each
            if seq.is_prefilled:
                sample_at.append((seq, batch.add(seq.next_token, seq.num_cached, seq.slot, True)))
                seq.num_cached += 1
        for seq in self._running:  # then prompt chunks with what is left of the budget
            if seq.is_prefilled or batch.room == 0:
                continue
            end = min(len(seq.prompt), seq.num_cached + batch.room)
            for pos in range(seq.num_cached, end):
                index = batch.add(seq.prompt[pos], pos, seq.slot, pos == len(seq.prompt) - 1)
            seq.num_cached = end
            if seq.is_prefilled:
                sample_at.append((seq, index))
        if batch.n_tokens == 0:
            return
        rc = self._ctx.decode()
        self.num_steps += 1
        self.last_step_num_seqs = len(self._running)
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc}")
        for seq, index in sample_at:
            delta = self._sample(seq, index)
            outputs.append((seq, delta))
            if delta.finish_reason is not None:
                self._release(seq)
        if outputs:
            self._on_outputs(outputs)

    def _sample(self, seq: Sequence, index: int) -> Delta:
        assert seq.sampler is not None
        token = seq.sampler.sample(self._ctx, index)
        logprobs: list[TokenLogprob] | None = None
        if seq.params.logprobs is not None:
            logprobs = [token_logprob(self._model, self._ctx.logits(index), token, seq.params.logprobs)]
        return token_delta(seq, token, self._model.piece(token), self._eog, logprobs)

    def _admit(self) -> None:
        while self._free_slots and self._waiting:
            with self._waiting_lock:
                seq = self._waiting.popleft()
            if seq.is_aborted:
                continue
            seq.slot = self._free_slots.pop()
            seq.sampler = SequenceSampler(self._model, seq.params, seq.prompt, window=self._ctx.n_ctx_per_seq)
            self._running.append(seq)

    def _drop_aborted(self) -> None:
        if any(s.is_aborted for s in self._running):
            for seq in [s for s in self._running if s.is_aborted]:
                self._release(seq)
        if self._waiting and any(s.is_aborted for s in self._waiting):
            with self._waiting_lock:
                kept = [s for s in self._waiting if not s.is_aborted]
                self._waiting.clear()
                self._waiting.extend(kept)

    def _release(self, seq: Sequence) -> None:
        """Free the sequence's KV slot and sampler at once, so the next step can admit another."""
        self._running.remove(seq)
        self._ctx.clear_seq(seq.slot)
        self._free_slots.append(seq.slot)
        seq.slot = -1
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None

    def _fail_running(self, error: Exception) -> None:
        failed = list(self._running)
        for seq in failed:
            self._release(seq)
        if failed:
            self._on_outputs([(seq, error) for seq in failed])
