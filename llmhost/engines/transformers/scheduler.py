"""Continuous batching for the transformers engine, on a thread of its own.

Every step:
1. cut out sequences whose client went away (their rows leave the batch at once);
2. admit waiting sequences while there are free rows: prefill them together as one left-padded batch
   (up to the prefill token budget, always at least one), sample their first tokens, and join them to
   the running batch;
3. one decode step over every running row (torch releases the GIL, so the event loop keeps serving);
4. sample each row with its own sampler, turn tokens into text, check stops and limits;
5. hand every delta of the step to the event loop in one call.

Prefix caching (text models whose cache layers are plain, not sliding-window): a finished row's KV
(prompt and the tokens fed after it) is copied to host RAM before the row is cut out, in the bounded
store the llama.cpp engine keeps evicted slots in; a new prompt that shares enough leading tokens with a
stored one is prefilled on its own from that KV, computing only the rest (a code-loop turn, the next turn
of a conversation, a judge's rubric again).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

import torch

from llmhost.engines.host_prefix_cache import HostPrefixCache
from llmhost.engines.threaded import GenerationState, Outputs, SchedulerThread, token_delta
from llmhost.errors import EngineError
from llmhost.types import Delta, PromptImage, TokenLogprob

from .batch import PaddedBatch
from .loader import LoadedModel
from .sampling import SequenceSampler, token_logprob

log = logging.getLogger("llmhost.transformers")

# A finished row's KV is stored only when it holds at least this many tokens, and a stored prefix is
# reused only when it saves at least this many (below that, a batched prefill is as fast).
MIN_STORED_TOKENS = 64
MIN_REUSED_TOKENS = 32


@dataclass(eq=False)
class Sequence(GenerationState):
    """One generation request as the transformers scheduler sees it: its sampler too."""

    is_finished: bool = False  # ended (or aborted); its row leaves the batch before the next step
    sampler: SequenceSampler | None = None
    images: tuple[PromptImage, ...] = ()  # a vision model's: prepared images placed in the prompt
    fed: list[int] = field(default_factory=list)  # tokens fed to the model after the prompt


class Scheduler(SchedulerThread):
    def __init__(
        self,
        loaded: LoadedModel,
        table: Seq[bytes],
        on_outputs: Callable[[Outputs], None],
        *,
        max_num_seqs: int,
        prefill_tokens: int,
        prefix_cache: HostPrefixCache | None = None,
        batch_wait_s: float = 0.0,
    ) -> None:
        super().__init__("llmhost-transformers", batch_wait_s=batch_wait_s)
        self._loaded = loaded
        self._table = table
        self._vocab_size = len(table)
        self._on_outputs = on_outputs
        self._max_num_seqs = max_num_seqs
        self._prefill_tokens = prefill_tokens
        self._eog = loaded.eog_token_ids
        self._batch = PaddedBatch(loaded.model, loaded.pad_token_id, loaded.device, loaded.vision)
        self._running: list[Sequence] = []  # row i of the batch is self._running[i]
        is_cached = prefix_cache is not None and prefix_cache.is_enabled and _plain_kv_layers(loaded)
        self.prefix_cache = prefix_cache if is_cached else None

    def _num_free_slots(self) -> int:
        return self._max_num_seqs - len(self._running)

    # -- the engine thread -----------------------------------------------------------------------
    def _thread_context(self) -> torch.inference_mode:
        return torch.inference_mode()

    def _step(self) -> None:
        outputs: Outputs = []
        try:
            self._drop_aborted()
            has_decoding = bool(self._running)
            admitted = self._take_waiting()
            if admitted:
                self._prefill(admitted, outputs)
            if has_decoding:
                # Rows that finished at their prefill leave first; every other row gets one token.
                self._release_finished()
                if self.prefix_cache is not None:  # what a finished row's stored KV holds
                    for seq in self._running:
                        seq.fed.append(seq.next_token)
                logits = self._batch.decode([s.next_token for s in self._running])
                self.num_steps += 1
                self.last_step_num_seqs = len(self._running)
                self._sample_rows(list(self._running), logits, outputs)
            self._release_finished()
        finally:  # what this step produced goes out even when a later part of it failed
            if outputs:
                self._on_outputs(outputs)

    def _prefill(self, admitted: list[Sequence], outputs: Outputs) -> None:
        """Prompts with a stored prefix are prefilled one by one from it; the others together."""
        computed: list[Sequence] = []
        for seq in admitted:
            self.num_prefix_queries += len(seq.prompt)
            stored, match = self._stored_prefix(seq)
            if stored is None:
                computed.append(seq)
                continue
            assert self.prefix_cache is not None
            self.prefix_cache.touch(stored)
            seq.num_cached_prompt = match
            self.num_prefix_hits += match
            prefix = [(keys[:, :, :match], values[:, :, :match]) for keys, values in stored.state]
            run = functools.partial(self._batch.prefill_after, prefix, seq.prompt[match:])
            self._prefill_group([seq], outputs, run)
        if computed:
            prompts, images = [s.prompt for s in computed], [s.images for s in computed]
            self._prefill_group(computed, outputs, functools.partial(self._batch.prefill, prompts, images))

    def _prefill_group(self, group: list[Sequence], outputs: Outputs, run: Callable[[], Any]) -> None:
        try:
            cache, mask, deltas, logits = run()
        except Exception as exc:
            # E.g. out of GPU memory for one huge prompt: fail the newcomers, keep the running batch.
            log.exception("prefill of %d new sequence(s) failed", len(group))
            outputs.extend((s, EngineError(f"generation failed: {exc}")) for s in group)
            return
        self._batch.join(cache, mask, deltas)
        self._running.extend(group)
        self._sample_rows(group, logits, outputs)

    def _stored_prefix(self, seq: Sequence) -> tuple[Any, int]:
        if self.prefix_cache is None:  # (always None for a vision model: _plain_kv_layers)
            return None, 0
        stored, match = self.prefix_cache.best(seq.prompt)
        return (stored, match) if match >= MIN_REUSED_TOKENS else (None, 0)

    def _store(self, row: int, seq: Sequence) -> None:
        """Copy a finished row's KV to the prefix store, unless it is short or already there."""
        cache = self.prefix_cache
        tokens = seq.prompt + seq.fed
        if cache is None or len(tokens) < MIN_STORED_TOKENS or cache.covers(tokens):
            return
        if self._batch.row_length(row) != len(tokens):  # not what this row's cache holds: keep nothing
            log.warning(
                "row %d holds %d tokens, expected %d; not stored",
                row,
                self._batch.row_length(row),
                len(tokens),
            )
            return
        try:
            layers = self._batch.row_kv(row, len(tokens))
        except OSError as exc:  # no memory map left (vm.max_map_count, RAM): the prefix is computed again
            log.warning("could not keep a prefix of %d tokens in host RAM: %s", len(tokens), exc)
            return
        cache.put(tokens, layers, sum(k.nbytes + v.nbytes for k, v in layers))

    def _take_waiting(self) -> list[Sequence]:
        """Waiting sequences for the free rows, within the padded prefill budget (at least one)."""
        taken: list[Sequence] = []
        longest = 0
        with self._waiting_lock:
            while self._waiting and len(self._running) + len(taken) < self._max_num_seqs:
                seq = self._waiting[0]
                if seq.is_aborted:
                    self._waiting.popleft()
                    continue
                width = max(longest, len(seq.prompt))
                if taken and width * (len(taken) + 1) > self._prefill_tokens:
                    break
                self._waiting.popleft()
                longest = width
                taken.append(seq)
        device = self._loaded.device
        for seq in taken:
            seq.sampler = SequenceSampler(seq.params, seq.prompt, self._vocab_size, device, self._eog)
        return taken

    def _sample_rows(self, seqs: list[Sequence], logits: torch.Tensor, outputs: Outputs) -> None:
        logits = logits[:, : self._vocab_size]
        greedy = logits.argmax(dim=-1).tolist()  # one call for every plain-greedy row
        for row, seq in enumerate(seqs):
            assert seq.sampler is not None
            token = greedy[row] if seq.sampler.is_plain_greedy else seq.sampler.sample(logits[row])
            seq.sampler.accept(token)
            outputs.append((seq, self._delta(seq, token, logits[row])))

    def _delta(self, seq: Sequence, token: int, logits: torch.Tensor) -> Delta:
        logprobs: list[TokenLogprob] | None = None
        if seq.params.logprobs is not None:
            logprobs = [token_logprob(logits, token, seq.params.logprobs, self._table)]
        delta = token_delta(seq, token, self._table[token], self._eog, logprobs)
        if delta.finish_reason is not None:
            seq.is_finished = True
        return delta

    def _drop_aborted(self) -> None:
        if any(s.is_aborted for s in self._running):
            for seq in self._running:
                if seq.is_aborted:
                    seq.is_finished = True
            self._release_finished()
        if self._waiting and any(s.is_aborted for s in self._waiting):
            with self._waiting_lock:
                kept = [s for s in self._waiting if not s.is_aborted]
                self._waiting.clear()
                self._waiting.extend(kept)

    def _release_finished(self) -> None:
        """Cut finished and aborted rows out of the batch, so the next step can admit others."""
        keep = [row for row, s in enumerate(self._running) if not s.is_finished]
        if len(keep) != len(self._running):
            for row, seq in enumerate(self._running):
                if seq.is_finished and not seq.is_aborted:
                    self._store(row, seq)
                    self._returning.ended()
            self._batch.keep(keep)
            for seq in self._running:
                if seq.is_finished:
                    seq.sampler = None
            self._running = [self._running[row] for row in keep]

    def _fail_running(self, error: Exception) -> None:
        failed = list(self._running)
        self._running = []
        self._batch.keep([])
        if failed:
            self._on_outputs([(seq, error) for seq in failed])


def _plain_kv_layers(loaded: LoadedModel) -> bool:
    """Whether every layer's KV holds every position (no sliding window) and the model reads text only:
    what storing and reusing a row's KV by position needs."""
    from transformers import DynamicCache

    if loaded.vision is not None:
        return False
    layers = DynamicCache(config=loaded.model.config).layers
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)
