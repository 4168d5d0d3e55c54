"""Continuous batching over one llama.cpp context, on a thread of its own.

Before a step an idle engine may wait a moment for the rest of a burst of returning clients
(SchedulerThread, returning_clients.py). Every step:
1. drop sequences whose client went away (their slot is free again at once; its cells stay reusable);
2. let sequences that waited for another's prompt prefix copy it, now that it is computed;
3. admit waiting sequences into free slots, each starting from the longest prefix of its prompt already
   in the KV cache (kv_slots.py picks the slot, slot_cells.py moves the cells), or waiting for a sequence
   that is computing that prefix right now; then, if a sequence that ended left a gap in the run of
   running slots, move one into it;
4. fill one batch: the next token of every decoding sequence first (decode latency is what users
   feel), then prompt chunks of prefilling sequences with the budget that is left (chunked prefill),
   laid out in slot order, each sequence's tokens together;
5. one `llama_decode` for the whole batch (it releases the GIL, so the event loop keeps serving). Each
   slot has a KV stream of its own, and llama.cpp splits such a batch into forward passes of equally
   many tokens per sequence over consecutive sequence ids: with the running slots one run and the batch
   in slot order, every running sequence's first token is in one pass, and the rest of the prompt
   chunks (one pass per chunk length) follow;
6. sample each sequence that got logits with its own sampler chain, detokenize, check stops;
7. hand every delta of the step to the event loop in one call.

The design follows llama.cpp's `server` slots (a slot per sequence, prompt caching in idle slots) and
vLLM's scheduler (decode-first token budget, chunked prefill, automatic prefix caching). A prompt shared
by sequences that arrive together (n > 1 choices, a batch of /predict prompts, eight clients with one
rubric) is computed once: the first one computes it, the others wait for it and copy its rows. A slot's
cells that are about to be dropped are saved to host RAM first (engines/host_prefix_cache.py), and a
prompt that matches a saved state better than any slot has it restored instead of computed.

A prompt with images (a vision model's, `vision.py`) records each image's placeholders as the image's
key, so prefix reuse tells pictures apart, and keeps its own positions (M-RoPE: an image advances them
by the longer side of its grid, not by its tokens). Its images are encoded on the vision encoder's
thread while the other sequences decode; an encoded image is decoded from its embeddings in a batch of
its own before the step's token batch (image_prefill.py).

A sequence that asks for its prompt's log-probabilities (`prompt_logprobs`, or an echoed prompt's
`logprobs`) computes its whole prompt, as vLLM does: cached cells hold no logits. Its prompt chunks ask
llama.cpp for the logits of every position (at most `PROMPT_LOGITS_PER_STEP` a step: llama.cpp keeps
an output buffer of vocabulary x outputs floats), each scored against the next prompt token, and the
scores ride on its first delta. Outputs never outnumber the batch's tokens, which the context's
`n_batch` (= the batch capacity) bounds, so llama.cpp's `n_outputs_max` (= n_batch) always holds them.
With `max_tokens` 0 nothing is sampled: the sequence ends after its prompt (finish "length").

When the KV layout is left automatic, each step of two or more sequences tells the advisor (kv_layout.py)
how much of what they hold is shared; when the other layout has paid for a while, the next moment nothing
runs the scheduler saves the slots' cells to host RAM, recreates the context with that layout and starts
over from the saved prefixes.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable

from llmhost.engines.host_prefix_cache import HostPrefixCache
from llmhost.engines.prompt_logprobs import score_rows
from llmhost.engines.threaded import Outputs, SchedulerThread, prompt_only_delta, token_delta
from llmhost.errors import EngineError, ModelLoadError
from llmhost.types import Delta, TokenLogprob

from .backend import Batch, LlamaContext, LlamaModel
from .image_prefill import ImagePrefill
from .kv_layout import KvLayoutAdvisor, sharing_ratio
from .kv_slots import KvSlotTable, common_prefix_len
from .sampler import SequenceSampler, token_logprob
from .sequence import Sequence, slot_index
from .slot_cells import SlotCells
from .vision import VisionEncoder

log = logging.getLogger("llmhost.llamacpp")

# A new sequence waits for a prefilling sequence's prompt prefix only when that saves it at least this
# many tokens of prefill; below that, computing them alongside is as fast as waiting.
MIN_FOLLOW_GAIN = 16
# Prompt positions whose logits one step asks for, for a sequence that scores its prompt: bounds
# llama.cpp's host buffer of logits (vocabulary x outputs floats; 155 MB for Qwen's 152k at 256).
PROMPT_LOGITS_PER_STEP = 256


class Scheduler(SchedulerThread):
    def __init__(
        self,
        model: LlamaModel,
        ctx: LlamaContext,
        on_outputs: Callable[[Outputs], None],
        host_cache: HostPrefixCache | None = None,
        vision: VisionEncoder | None = None,
        *,
        reuse_prefixes: bool = True,
        batch_wait_s: float = 0.0,
        make_context: Callable[[bool], LlamaContext] | None = None,
    ):
        """`make_context(unified)`, when given, makes the KV layout automatic: it creates a context of the
        given layout (after the scheduler closed its own) and becomes the owner's context."""
        super().__init__("llmhost-llamacpp", batch_wait_s=batch_wait_s)
        self._model = model
        self._ctx = ctx
        self._vision = vision
        self._make_context = make_context
        self._layout = KvLayoutAdvisor(ctx.config.unified_kv) if make_context is not None else None
        self._on_outputs = on_outputs
        self._eog = frozenset(model.eog_token_ids)
        # Per-sequence streams need the running slots in one run (one forward pass); the pool does not.
        self._slots = KvSlotTable(
            ctx.config.n_seq, reuse_prefixes=reuse_prefixes, keeps_one_run=not ctx.config.unified_kv
        )
        self._cells = SlotCells(ctx, self._slots, host_cache)
        self._running: list[Sequence] = []
        self._images = ImagePrefill(ctx, vision, self._wake) if vision is not None else None

    @property
    def host_cache(self) -> HostPrefixCache | None:
        return self._cells.host_cache

    @property
    def num_slots(self) -> int:
        return self._ctx.config.n_seq

    def _num_free_slots(self) -> int:
        return self._slots.num_free

    @property
    def ctx(self) -> LlamaContext:
        return self._ctx

    @property
    def num_layout_switches(self) -> int:
        return self._layout.num_switches if self._layout is not None else 0

    # -- the engine thread (its loop is SchedulerThread._run) -------------------------------------
    def _step(self) -> None:
        outputs: Outputs = []
        self._drop_aborted()
        if not self._running and self._layout is not None and self._layout.should_switch():
            self._switch_layout()
        if self._running:  # idle cells cost only while something decodes
            self._cells.evict_idle()
        self._start_followers()
        self._admit()
        self._close_gaps()
        if not self._running:
            return
        has_decoded_images = self._advance_images()
        batch = self._ctx.batch
        batch.clear()
        sample_at: list[tuple[Sequence, int]] = []
        score_at: list[tuple[Sequence, int, int, int]] = []  # (seq, first position, end, its batch index)
        num_in_batch = self._fill_tokens(batch, sample_at, score_at)
        num_in_batch += self._fill_image_prompts(batch, sample_at)
        if batch.n_tokens == 0:
            if not has_decoded_images and self._images is not None:
                self._images.wait(self._running)  # every sequence waits for its image's encoding
            return
        started = time.perf_counter()
        rc = self._ctx.decode()
        self.num_steps += 1
        self.last_step_num_seqs = num_in_batch
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc}")
        if self._layout is not None and len(self._running) > 1:
            held = (seq.slot.tokens if seq.is_prefilled and seq.slot else seq.prompt for seq in self._running)
            self._layout.observe(sharing_ratio(held), len(self._running), time.perf_counter() - started)
        for seq, start, end, first_index in score_at:
            self._score_prompt(seq, start, end, first_index)
        for seq, index in sample_at:
            delta = self._sample(seq, index)
            outputs.append((seq, delta))
            if delta.finish_reason is not None:
                self._release(seq)
                self._returning.ended()
        if outputs:
            self._on_outputs(outputs)

    def _fill_tokens(
        self,
        batch: Batch,
        sample_at: list[tuple[Sequence, int]],
        score_at: list[tuple[Sequence, int, int, int]],
    ) -> int:
        """Put the step's tokens in the batch: the next token of every decoding sequence first, then
        prompt chunks with the budget left; laid out in slot order, each sequence's tokens together (what
        keeps every running sequence's first token in one forward pass). Returns the sequences in it."""
        num_decodes = min(batch.room, sum(seq.is_prefilled for seq in self._running))
        budget = batch.room - num_decodes
        chunks: dict[Sequence, int] = {}  # prompt tokens each prefilling sequence gets, in slot order
        for seq in self._running:
            if budget > 0 and not (seq.is_prefilled or seq.leader is not None or seq.images):
                left = len(seq.prompt) - seq.num_cached  # (prompts with images: _fill_image_prompts)
                chunks[seq] = n = min(left, budget, PROMPT_LOGITS_PER_STEP if seq.scores_prompt else left)
                budget -= n
        num_in_batch = 0
        for seq in self._running:
            slot = seq.slot
            assert slot is not None
            if seq.is_prefilled:
                if num_decodes > 0:
                    num_decodes -= 1
                    num_in_batch += 1
                    sample_at.append((seq, batch.add(seq.next_token, seq.next_position, slot.index, True)))
                    slot.tokens.append(seq.next_token)
                continue
            if seq not in chunks:
                continue
            num_in_batch += 1
            start = seq.num_cached
            end = start + chunks[seq]
            if seq.scores_prompt:
                score_at.append((seq, start, end, batch.n_tokens))
            for pos in range(start, end):
                wants_logits = seq.scores_prompt or pos == len(seq.prompt) - 1
                index = batch.add(seq.prompt[pos], pos, slot.index, wants_logits)
            slot.tokens.extend(seq.prompt[start:end])
            if seq.is_prefilled:
                sample_at.append((seq, index))
        return num_in_batch

    def _sample(self, seq: Sequence, index: int) -> Delta:
        prompt_scores, seq.prompt_scores = seq.prompt_scores, None  # the first delta carries them
        if seq.max_tokens == 0:  # the prompt only: nothing is sampled
            return prompt_only_delta(seq, prompt_scores)
        assert seq.sampler is not None
        token = seq.sampler.sample(self._ctx, index)
        logprobs: list[TokenLogprob] | None = None
        if seq.params.logprobs is not None:
            logprobs = [token_logprob(self._model, self._ctx.logits(index), token, seq.params.logprobs)]
        delta = token_delta(seq, token, self._model.piece(token), self._eog, logprobs)
        delta.prompt_logprobs = prompt_scores
        return delta

    def _score_prompt(self, seq: Sequence, start: int, end: int, first_index: int) -> None:
        """Score the prompt tokens at positions start + 1 … end (the last one's logits are the first
        sampled token's) with the logits of the positions before them."""
        num_top, scores = seq.params.prompt_logprobs, seq.prompt_scores
        assert num_top is not None and scores is not None
        last = min(end, len(seq.prompt) - 1)  # positions with a next prompt token to score
        rows = [self._ctx.logits(first_index + pos - start) for pos in range(start, last)]
        scores.extend(score_rows(rows, seq.prompt[start + 1 : last + 1], num_top, self._model.piece))

    # -- images (image_prefill.py) ----------------------------------------------------------------
    def _advance_images(self) -> bool:
        """Encode and decode the images prompts have reached; whether any was decoded this step."""
        if self._images is None:
            return False
        has_decoded, failed = self._images.advance(self._running)
        for seq, _error in failed:
            self._release(seq)
        if failed:
            self._on_outputs(failed)
        return has_decoded

    def _fill_image_prompts(self, batch: Batch, sample_at: list[tuple[Sequence, int]]) -> int:
        return self._images.fill(self._running, batch, sample_at) if self._images is not None else 0

    # -- admission and prefix reuse --------------------------------------------------------------
    def _admit(self) -> None:
        while self._waiting and self._slots.num_free > 0:
            with self._waiting_lock:
                seq = self._waiting.popleft()
            if seq.is_aborted:
                continue
            # A sequence that scores its prompt computes all of it: reused cells hold no logits.
            reuses = not seq.scores_prompt
            slot, match = self._cells.take(seq.prompt, reuses=reuses)  # a slot is free (the loop's test)
            seq.slot = slot
            self.num_prefix_queries += len(seq.prompt)
            if seq.scores_prompt:
                seq.prompt_scores = [None]  # nothing precedes the first token
            leader, shared = self._prefilling_leader(seq.prompt) if reuses else (None, 0)
            if leader is not None and shared >= match + MIN_FOLLOW_GAIN:
                seq.leader, seq.follow_len = leader, shared
            else:
                self._count_reuse(seq)
            seq.sampler = SequenceSampler(self._model, seq.params, seq.prompt, window=self._ctx.n_ctx_per_seq)
            # Running sequences stay in slot order, the order the batch is laid out in.
            bisect.insort(self._running, seq, key=slot_index)

    def _prefilling_leader(self, prompt: list[int]) -> tuple[Sequence | None, int]:
        """The running sequence still computing the longest prefix of `prompt` (none that follows
        another itself), and how many tokens of it `prompt` can take."""
        best, best_len = None, 0
        if not self._slots.reuse_prefixes:
            return None, 0
        for seq in self._running:
            if seq.leader is None and not seq.is_prefilled:
                n = min(common_prefix_len(seq.prompt, prompt), len(prompt) - 1)
                if n > best_len:
                    best, best_len = seq, n
        return best, best_len

    def _start_followers(self) -> None:
        """Followers whose leader has computed the shared prefix (or is gone) copy the best prefix the
        cache now has and start prefilling from there."""
        for seq in self._running:
            leader = seq.leader
            if leader is None:
                continue
            is_waiting = leader.slot is not None and not leader.is_aborted
            if is_waiting and leader.num_cached < seq.follow_len:
                continue
            seq.leader = None
            assert seq.slot is not None
            source, match = self._slots.best_source(seq.prompt, exclude=seq.slot)
            if match > seq.num_cached:
                self._cells.load_prefix(seq.slot, source, match)
            self._count_reuse(seq)

    def _count_reuse(self, seq: Sequence) -> None:
        seq.num_cached_prompt = seq.num_cached
        self.num_prefix_hits += seq.num_cached

    def _close_gaps(self) -> None:
        """Keep the running slots one run (SlotCells.close_gaps), the sequences following their cells."""
        moves = self._cells.close_gaps()
        for old, new in moves:
            next(s for s in self._running if s.slot is old).slot = new
        if moves:
            self._running.sort(key=slot_index)

    # -- KV layout (kv_layout.py) -----------------------------------------------------------------
    def _switch_layout(self) -> None:
        """Recreate the context with the other KV layout; nothing runs. The slots' cells go to host RAM
        first (the next prompts restore them from there, converted: SeqState.for_streams)."""
        assert self._layout is not None and self._make_context is not None and not self._running
        unified = not self._ctx.config.unified_kv
        started = time.perf_counter()
        self._cells.save_all()
        self._ctx.close()
        try:
            ctx = self._make_context(unified)
        except ModelLoadError as exc:  # memory taken meanwhile: the old layout again, and no more switches
            log.warning("could not switch the KV layout (%s); keeping the one it had", exc)
            self._layout = None
            try:
                ctx = self._make_context(not unified)
            except ModelLoadError as again:  # no context at all: the engine stops, failing what waits
                self._is_stopping = True
                raise EngineError(f"the engine lost its KV cache: {again}") from again
        self._use_context(ctx)
        if self._layout is not None:
            self._layout.switched()
            log.info(
                "KV layout now %s (took %.2f s): the recent steps' sequences %s",
                "one pool" if unified else "a stream per sequence",
                time.perf_counter() - started,
                "shared most of what they held" if unified else "shared too little of it",
            )

    def _use_context(self, ctx: LlamaContext) -> None:
        self._ctx = ctx
        self._slots.forget_all()
        self._slots.keeps_one_run = not ctx.config.unified_kv
        self._cells = SlotCells(ctx, self._slots, self._cells.host_cache)
        if self._vision is not None:
            self._images = ImagePrefill(ctx, self._vision, self._wake)

    # -- leaving -----------------------------------------------------------------------------------
    def _drop_aborted(self) -> None:
        if any(s.is_aborted for s in self._running):
            for seq in [s for s in self._running if s.is_aborted]:
                self._release(seq)
        if self._waiting and any(s.is_aborted for s in self._waiting):
            with self._waiting_lock:
                kept = [s for s in self._waiting if not s.is_aborted]
                self._waiting.clear()
                self._waiting.extend(kept)

    def _release(self, seq: Sequence, *, keep_cache: bool = True) -> None:
        """Free the sequence's slot and sampler at once, so the next step can admit another. The slot's
        cells stay for later prompts that start the same way (unless prefix reuse is off)."""
        self._running.remove(seq)
        slot, seq.slot, seq.leader = seq.slot, None, None
        if slot is not None:
            if not (keep_cache and self._slots.reuse_prefixes):
                self._ctx.clear_seq(slot.index)
                slot.tokens = []
            self._slots.release(slot)
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None

    def _fail_running(self, error: Exception) -> None:
        """A failed decode leaves the cache in an unknown state: fail what runs and forget every slot."""
        failed = list(self._running)
        for seq in failed:
            self._release(seq, keep_cache=False)
        self._ctx.clear_all()
        self._slots.forget_all()
        if failed:
            self._on_outputs([(seq, error) for seq in failed])
