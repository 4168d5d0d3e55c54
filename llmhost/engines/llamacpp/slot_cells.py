"""What each KV slot's cells hold, and how cells move: a new prompt's cached prefix loaded into its slot
(in place, copied from another slot, restored from host RAM), a slot saved to host RAM before its cells
are dropped, idle slots emptied (unified pool), sequences moved into the gaps ended ones left (streams).

The slot table (kv_slots.py) decides which slot; this applies it to the llama.cpp context. Everything
runs on the engine thread, between decode steps.
"""

from __future__ import annotations

import logging
import time

from llmhost.engines.host_prefix_cache import HostPrefixCache, SavedPrefix

from .backend import LlamaContext
from .kv_slots import KvSlot, KvSlotTable, common_prefix_len, position_at

log = logging.getLogger("llmhost.llamacpp")

# A slot's cells are saved to host RAM before they are dropped only when at least this many tokens would
# be lost: fewer are computed again about as fast as they are saved and restored.
MIN_SAVED_TOKENS = 64
# Between streams, a prefix another slot holds is copied into a new sequence's slot only when it saves at
# least 1 computed token per this many tokens the source holds: the copy takes all of the source's rows
# (measured: 13 ms for 700 tokens of SmolLM2-135M, the time of 4 tokens of prefill; bigger models compute
# a token slower still, relative to copying its rows).
COPIED_TOKENS_PER_COMPUTED = 128
# A saved state is restored only when it gives a prompt at least this many more tokens than the slots do.
MIN_RESTORE_GAIN = 32
# After a move into a gap failed (no memory for the copy), the next is tried only this much later: the
# gap costs a second forward pass a step meanwhile, a retry every step would cost a failed copy and a
# warning each.
GAP_MOVE_RETRY_S = 1.0


class SlotCells:
    """The llama.cpp context's cells behind the slot table: loads, copies, saves and moves them."""

    def __init__(self, ctx: LlamaContext, slots: KvSlotTable, host_cache: HostPrefixCache | None) -> None:
        self._ctx = ctx
        self._slots = slots
        self._unified = not slots.keeps_one_run  # the pool, where cells are tagged rather than copied
        is_cached = host_cache is not None and host_cache.is_enabled and slots.reuse_prefixes
        self.host_cache = host_cache if is_cached else None
        self._gap_moves_resume_at = 0.0  # time.monotonic() before which no gap move is tried

    def take(self, prompt: list[int], *, reuses: bool) -> tuple[KvSlot, int]:
        """A free slot (the caller checked there is one) for a new sequence, holding the longest prefix of
        `prompt` the slots or host RAM have (what a copy or restore is worth), and its length. With
        `reuses` False the slot starts empty (a prompt that is scored: cached cells hold no logits)."""
        source, match = self._slots.best_source(prompt) if reuses else (None, 0)
        saved, saved_match = self.host_cache.best(prompt) if self.host_cache and reuses else (None, 0)
        if saved is not None and saved_match >= match + MIN_RESTORE_GAIN:
            slot = self._slots.take(None, 0)
            assert slot is not None  # a slot is free
            if self._restore(slot, saved, saved_match):
                return slot, saved_match
            self.load_prefix(slot, source, match)
            return slot, len(slot.tokens)
        slot = self._slots.take(source, match)
        assert slot is not None
        if source is not None and source is not slot and not self._unified:
            # A copy of another stream is not free: worth it only for enough more tokens than the slot's
            # own cells hold.
            own = min(common_prefix_len(slot.tokens, prompt), len(prompt) - 1)
            if match - own < len(source.tokens) // COPIED_TOKENS_PER_COMPUTED:
                source, match = slot, own
        self.load_prefix(slot, source, match)
        return slot, len(slot.tokens)

    def load_prefix(self, slot: KvSlot, source: KvSlot | None, match: int) -> None:
        """Make `slot` hold exactly the first `match` tokens of `source` (the prompt's cached prefix): in
        place when it is the source, else as a copy of the source's rows into the slot's stream."""
        if source is slot:
            self.save(slot, keep=match)
            self._ctx.clear_seq(slot.index, position_at(slot.tokens, match))
            del slot.tokens[match:]
            return
        if slot.tokens:
            self.save(slot)
        if source is None or match == 0:
            if slot.tokens:
                self._ctx.clear_seq(slot.index)
                slot.tokens = []
        elif self._copy(source, slot, position_at(source.tokens, match)):  # the copy replaces its cells
            slot.tokens = source.tokens[:match]

    def _copy(self, source: KvSlot, slot: KvSlot, end_position: int) -> bool:
        """Make `slot` hold `source`'s cells below `end_position` (the caller sets its tokens); False (the
        slot left empty, its tokens to be computed) when there is no memory for the copy or llama.cpp could
        not place it."""
        try:
            is_copied = self._ctx.copy_prefix(source.index, slot.index, end_position)
        except OSError as exc:  # no memory map left (vm.max_map_count, RAM)
            log.warning("could not copy %d cached tokens between slots: %s", len(source.tokens), exc)
            is_copied = False
        if not is_copied:
            self._ctx.clear_seq(slot.index)
            slot.tokens = []
        return is_copied

    def _restore(self, slot: KvSlot, saved: SavedPrefix, match: int) -> bool:
        """Make `slot` hold the first `match` tokens of a state saved in host RAM."""
        assert self.host_cache is not None
        if slot.tokens:
            self.save(slot)
        if not self._ctx.restore_seq(slot.index, saved.state):  # llama.cpp emptied the slot
            log.warning("could not restore a saved prefix of %d tokens; computing it", len(saved.tokens))
            self.host_cache.discard(saved)
            slot.tokens = []
            return False
        self._ctx.clear_seq(slot.index, position_at(saved.tokens, match))
        slot.tokens = saved.tokens[:match]
        self.host_cache.touch(saved)
        return True

    def save(self, slot: KvSlot, keep: int = 0, *, others_stay: bool = True) -> None:
        """Save `slot`'s state to host RAM before its cells from position `keep` on are dropped, when at
        least MIN_SAVED_TOKENS of them are held by no other slot (`others_stay`) and no saved state (a
        finished request whose prompt shares a long block with the others loses only its own tail: not
        worth a save)."""
        tokens, cache = slot.tokens, self.host_cache
        if cache is None or len(tokens) - keep < MIN_SAVED_TOKENS:
            return
        n = len(tokens)
        others = [o for o in self._slots.slots if o is not slot] if others_stay else []
        held = max(keep, cache.best(tokens)[1], *(common_prefix_len(o.tokens, tokens) for o in others))
        if n - held < MIN_SAVED_TOKENS:
            return
        try:
            state = self._ctx.save_seq(slot.index)
        except OSError as exc:  # no memory map left (vm.max_map_count, RAM): the prefix is computed again
            log.warning("could not keep a prefix of %d tokens in host RAM: %s", n, exc)
            return
        cache.put(tokens, state)

    def save_all(self) -> None:
        """Before the context goes (a switch of KV layout): save what the slots hold and host RAM does not,
        the most recently used slot first (a prefix every slot shares is saved once)."""
        for slot in sorted(self._slots.slots, key=lambda s: s.last_used, reverse=True):
            self.save(slot, others_stay=False)

    def evict_idle(self) -> None:
        """In the unified pool: empty the idle slots past the idle-cell budget (kv_slots.py says why idle
        cells cost there; in streams they cost nothing). Called only while sequences decode."""
        if self._unified and self._slots.reuse_prefixes:
            for slot in self._slots.idle_to_evict():
                self.save(slot)
                self._ctx.clear_seq(slot.index)
                slot.tokens = []

    def close_gaps(self) -> list[tuple[KvSlot, KvSlot]]:
        """Move running sequences' cells into the slots that ended sequences left inside the run, until the
        busy slots are one run again: a gap would split every decode step into two forward passes (two
        reads of the weights) for as long as it stays. Returns the moves (from, to) for the scheduler to
        follow; the old slot keeps its cells as an idle slot. A move that cannot be made (no memory for
        the copy) ends it, and the next is tried GAP_MOVE_RETRY_S later."""
        moves: list[tuple[KvSlot, KvSlot]] = []
        if time.monotonic() < self._gap_moves_resume_at:
            return moves
        while (move := self._slots.gap_to_fill()) is not None:
            source, target = move
            if target.tokens:
                self.save(target)
            if not self._copy(source, target, position_at(source.tokens, len(source.tokens))):
                self._gap_moves_resume_at = time.monotonic() + GAP_MOVE_RETRY_S
                break
            target.tokens = list(source.tokens)
            target.is_busy = True
            self._slots.release(source)
            moves.append(move)
        return moves
