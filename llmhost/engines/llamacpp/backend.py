"""Thin, owned wrappers over llama.cpp's C API (through llama-cpp-python's ctypes bindings).

Only this module, `sampler.py` and `vision.py` (libmtmd, for images) touch ctypes. Everything here is
called from the engine's own thread, except the read-only vocabulary helpers (tokenize/detokenize),
which llama.cpp allows from any thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp as C
import numpy as np

from llmhost.errors import ModelLoadError

from .seq_state import SeqState

log = logging.getLogger("llmhost.llamacpp")
_native_log = logging.getLogger("llmhost.llamacpp.native")

# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line).
# llama.cpp is chatty at INFO, so its INFO lines go to DEBUG here.
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_last_level = logging.DEBUG


@C.llama_log_callback
def forward_native_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    global _last_level
    py_level = _last_level if level == 5 else _LOG_LEVELS.get(level, logging.DEBUG)
    _last_level = py_level
    if _native_log.isEnabledFor(py_level):
        _native_log.log(py_level, "%s", text.decode("utf-8", "replace").rstrip())


_backend_ready = False


def supports_gpu_offload() -> bool:
    """Whether this llama.cpp build can put layers on a GPU (CUDA, Metal, Vulkan…); the PyPI build
    llmhost compiles by default is CPU-only."""
    return bool(C.llama_supports_gpu_offload())


def init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        C.llama_log_set(forward_native_log, ctypes.c_void_p(0))
        C.llama_backend_init()
        _backend_ready = True


class LlamaModel:
    """A loaded GGUF model and its vocabulary."""

    def __init__(self, path: str, *, vocab_only: bool = False, n_gpu_layers: int = 0) -> None:
        init_backend()
        if not os.path.isfile(path):
            raise ModelLoadError(f"GGUF file not found: {path}")
        params = C.llama_model_default_params()
        # vocab_only: the tokenizer and metadata without the weights (upstream engines tokenize here).
        params.vocab_only = vocab_only
        # Set always: llama.cpp's own default (-1, every layer) would offload silently on a GPU build.
        params.n_gpu_layers = n_gpu_layers
        self.path = path
        self.ptr = C.llama_model_load_from_file(path.encode(), params)
        if not self.ptr:
            raise ModelLoadError(f"llama.cpp could not load {path}")
        self.vocab = C.llama_model_get_vocab(self.ptr)
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = C.llama_model_n_ctx_train(self.ptr)
        self.size_bytes = int(C.llama_model_size(self.ptr))
        self.eog_token_ids = tuple(t for t in range(self.n_vocab) if C.llama_vocab_is_eog(self.vocab, t))
        self._piece_cache: dict[int, bytes] = {}

    def close(self) -> None:
        if self.ptr:
            C.llama_model_free(self.ptr)
            self.ptr = None

    def meta(self, key: str) -> str | None:
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = C.llama_model_meta_val_str(self.ptr, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:  # chat templates can be long; ask again with the exact size
            buf = ctypes.create_string_buffer(n + 1)
            C.llama_model_meta_val_str(self.ptr, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", "replace")

    def parameter_count(self) -> str:
        """ "135M", "7.6B": from the weights themselves (llama.cpp's own description names a size class,
        "256M" for SmolLM2-135M)."""
        n = C.llama_model_n_params(self.ptr)
        return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry itself (e.g. `<|im_end|>`), for special-token strings."""
        if token_id < 0:
            return ""
        raw = C.llama_vocab_get_text(self.vocab, token_id)
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def has_plain_kv_cache(self) -> bool:
        """Whether the model's memory is one KV cache of full attention (no sliding-window cache beside
        it, no recurrent state): the memory whose saved states move between KV layouts
        (SeqState.for_streams)."""
        return not (
            C.llama_model_is_recurrent(self.ptr)
            or C.llama_model_is_hybrid(self.ptr)
            or C.llama_model_n_swa(self.ptr) > 0
        )

    @property
    def bos_token_id(self) -> int:
        return C.llama_vocab_bos(self.vocab)

    @property
    def eos_token_id(self) -> int:
        return C.llama_vocab_eos(self.vocab)

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (C.llama_token * n_max)()
        n = C.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (C.llama_token * n_max)()
            n = C.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token_id: int) -> bytes:
        """The bytes a token contributes to visible text (special/control tokens contribute none)."""
        cached = self._piece_cache.get(token_id)
        if cached is None:
            # A buffer per call: the scheduler thread and the prompt-preparing threads look pieces up at
            # once, and ctypes lets the GIL go during the call. Each token misses the cache once.
            buf = ctypes.create_string_buffer(256)
            n = C.llama_token_to_piece(self.vocab, token_id, buf, 256, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = C.llama_token_to_piece(self.vocab, token_id, buf, -n, 0, False)
            cached = buf.raw[:n]
            self._piece_cache[token_id] = cached
        return cached

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in token_ids).decode("utf-8", "replace")

    def longest_token_bytes(self) -> int:
        """The most bytes one token can stand for, special-token spellings included (0.1 s for 50k tokens):
        no text longer than `n x this` tokenizes to n tokens or fewer."""
        buf = ctypes.create_string_buffer(1024)
        longest = 1
        for token_id in range(self.n_vocab):
            n = C.llama_token_to_piece(self.vocab, token_id, buf, 1024, 0, True)
            longest = max(longest, -n if n < 0 else n)
        return longest


@dataclass(frozen=True)
class ContextConfig:
    n_seq: int  # sequences that can be in flight at once (one KV slot each)
    n_ctx_per_seq: int  # context of one sequence (= max_model_len)
    n_batch: int  # most tokens in one llama_decode call (prefill chunk budget)
    n_threads: int
    flash_attn: bool = False
    # Called by ggml for every graph node (a ggml_backend_sched_eval_callback); tests count forward passes
    # with it. None in serving: a callback per node costs time.
    eval_callback: object | None = None
    # One KV pool for every sequence (llama-server's -kvu) instead of a stream per sequence; see LlamaContext.
    unified_kv: bool = False


class LlamaContext:
    """One llama.cpp context: a KV stream of `max_model_len` cells for each of `n_seq` sequence ids (or one
    pool of them all, `unified_kv`), and one batch buffer."""

    def __init__(self, model: LlamaModel, config: ContextConfig) -> None:
        self.model = model
        self.config = config
        params = C.llama_context_default_params()
        params.n_ctx = config.n_ctx_per_seq * config.n_seq
        params.n_batch = config.n_batch
        params.n_ubatch = config.n_batch
        params.n_seq_max = config.n_seq
        params.n_threads = config.n_threads
        params.n_threads_batch = config.n_threads
        # By default one KV stream per sequence id, as llama-server runs with -np: a token's attention
        # looks only at its own sequence's cells. In one unified pool (-kvu) every query scans every used
        # cell of the pool, the other sequences' too (masked out, but computed): measured here with 8
        # sequences of 150 / 600 distinct tokens, decode steps took 9% / 35% longer. The pool wins when the
        # sequences share a long prefix: its cells are stored once, tagged with every sequence id, and read
        # once for all of them (8 sequences sharing 700 tokens: 12% faster steps than 8 copies in streams).
        # Streams also make answers bit-reproducible whatever else runs. What they ask of the scheduler:
        # llama.cpp splits a batch into one forward pass per run of consecutive sequence ids (split_equal),
        # and a prefix moves between streams as a copy of its K/V rows, not as a tag on shared cells.
        params.kv_unified = config.unified_kv
        if config.eval_callback is not None:
            params.cb_eval = config.eval_callback
            params.cb_eval_user_data = None
        params.flash_attn_type = (
            C.LLAMA_FLASH_ATTN_TYPE_ENABLED if config.flash_attn else C.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.no_perf = True
        self.ptr = C.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise ModelLoadError("llama.cpp could not create a context (out of memory?)")
        self.n_ctx_per_seq = min(config.n_ctx_per_seq, int(C.llama_n_ctx_seq(self.ptr)))
        self.memory = C.llama_get_memory(self.ptr)
        self.batch = Batch(config.n_batch)

    def decode(self) -> int:
        """Run the model on the filled batch. 0 = ok; 1 = no KV room; negative = error."""
        return C.llama_decode(self.ptr, self.batch.raw)

    def decode_embeddings(self, rows: np.ndarray, positions: np.ndarray, seq_id: int) -> int:
        """Run the model on input embeddings (an image's, from the vision encoder) of one sequence, as
        `decode` does on tokens; llama_decode takes tokens or embeddings, never both in one batch.
        `rows` is [n, n_embd] float32; `positions` is [sections, n]: one row per position section
        (M-RoPE's time, height, width, extra; one row otherwise), as llama.cpp reads them. No logits."""
        n = len(rows)
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        pos = np.ascontiguousarray(positions, dtype=np.int32).reshape(-1)
        n_seq_id = np.ones(n, dtype=np.int32)
        seq = (C.llama_seq_id * 1)(seq_id)  # every row names the one sequence
        seq_ptr = ctypes.cast(seq, ctypes.POINTER(C.llama_seq_id))
        seq_ids = (ctypes.POINTER(C.llama_seq_id) * n)(*([seq_ptr] * n))
        outputs = np.zeros(n, dtype=np.int8)
        batch = C.llama_batch(
            n_tokens=n,
            token=None,
            embd=rows.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            pos=pos.ctypes.data_as(ctypes.POINTER(C.llama_pos)),
            n_seq_id=n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=seq_ids,
            logits=outputs.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        return C.llama_decode(self.ptr, batch)  # the arrays above live until it returns; it copies them

    def clear_seq(self, seq_id: int, from_pos: int = 0) -> None:
        """Drop the sequence's cells at positions >= from_pos (cells other sequences share stay)."""
        C.llama_memory_seq_rm(self.memory, seq_id, from_pos, -1)

    def copy_prefix(self, src_seq: int, dst_seq: int, end_position: int) -> bool:
        """Make `dst_seq` hold `src_seq`'s cells at positions below `end_position` and nothing else. In the
        unified pool that tags the cells with one more sequence id (no data moves); between streams all of
        `src_seq`'s K/V rows are copied, then the ones from `end_position` on dropped (a few ms per
        thousand tokens of a small model). False when llama.cpp could not place the copy (`dst_seq` is
        then empty); raises OSError when no memory is left for it."""
        if self.config.unified_kv:
            self.clear_seq(dst_seq)
            C.llama_memory_seq_cp(self.memory, src_seq, dst_seq, 0, end_position)
            return True
        if not self.restore_seq(dst_seq, self.save_seq(src_seq)):  # a restore replaces dst's cells
            return False
        self.clear_seq(dst_seq, end_position)
        return True

    def clear_all(self) -> None:
        if self.ptr:  # a closed context (a switch of KV layout that failed) holds nothing
            C.llama_memory_clear(self.memory, True)

    def save_seq(self, seq_id: int) -> SeqState:
        """The sequence's KV state (positions and K/V rows of every cell it uses), for `restore_seq`."""
        state = SeqState(C.llama_state_seq_get_size(self.ptr, seq_id))
        state.size = C.llama_state_seq_get_data(self.ptr, state.buffer, state.capacity, seq_id)
        return state

    @property
    def num_streams(self) -> int:
        """KV streams llama.cpp keeps: one per sequence id, or the pool's one."""
        return 1 if self.config.unified_kv else self.config.n_seq

    def restore_seq(self, seq_id: int, state: SeqState) -> bool:
        """Replace the sequence's cells with a state `save_seq` made (of any sequence id, in a context of
        either KV layout); False when llama.cpp could not place it (the sequence is then empty)."""
        if state.num_streams != self.num_streams:
            converted = state.for_streams(self.num_streams)
            if converted is None:
                log.warning(
                    "a saved KV state of %d streams does not fit this context's layout", state.num_streams
                )
                C.llama_memory_seq_rm(self.memory, seq_id, 0, -1)
                return False
            state = converted
        return C.llama_state_seq_set_data(self.ptr, state.buffer, state.size, seq_id) > 0

    def logits(self, batch_index: int) -> np.ndarray:
        ptr = C.llama_get_logits_ith(self.ptr, batch_index)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))

    def close(self) -> None:
        if self.ptr:
            self.batch.close()
            C.llama_free(self.ptr)
            self.ptr = None


class Batch:
    """A reusable llama_batch: tokens of several sequences decoded in one call."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = C.llama_batch_init(capacity, 0, 1)
        self.n_tokens = 0
        # The arrays, looked up once: this runs for every token of every step.
        self._token, self._pos = self.raw.token, self.raw.pos
        self._n_seq_id, self._seq_id, self._logits = self.raw.n_seq_id, self.raw.seq_id, self.raw.logits

    def clear(self) -> None:
        self.n_tokens = 0
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq_id: int, want_logits: bool) -> int:
        """Append one token; returns its index in the batch (used to read its logits)."""
        i = self.n_tokens
        self._token[i] = token
        self._pos[i] = pos
        self._n_seq_id[i] = 1
        self._seq_id[i][0] = seq_id
        self._logits[i] = want_logits
        self.n_tokens = i + 1
        self.raw.n_tokens = self.n_tokens
        return i

    @property
    def room(self) -> int:
        return self.capacity - self.n_tokens

    def close(self) -> None:
        if self.raw is not None:
            C.llama_batch_free(self.raw)
            self.raw = None
