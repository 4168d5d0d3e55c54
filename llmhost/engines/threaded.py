"""What the in-process engines (llama.cpp, transformers) share: a scheduler that runs on its own thread,
the bridge that carries its deltas to the event loop, and the checks every prompt passes before it is
queued.

The engine thread never touches asyncio objects: it hands each step's outputs to `DeltaBridge.on_outputs`,
which schedules their delivery on the loop (`call_soon_threadsafe`); each sequence's consumer reads its
own queue. Closing a consumer's iterator early marks the sequence aborted, and the scheduler frees it
before its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmhost.context_window import completion_room, ensure_fits
from llmhost.engines.returning_clients import ReturningClients
from llmhost.engines.textstream import StopStringMatcher
from llmhost.errors import EngineError, InvalidRequest, ModelNotLoaded
from llmhost.types import Delta, EngineInfo, EngineStats, FinishReason, SamplingParams, TokenLogprob, Usage

log = logging.getLogger("llmhost.engine")


@dataclass(eq=False)
class GenerationState:
    """What every in-process engine tracks for one request; each scheduler's `Sequence` adds its own
    (KV slot, sampler, batch row)."""

    request_id: str
    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    next_token: int = -1  # sampled, not yet fed to the model
    num_generated: int = 0
    num_cached_prompt: int = 0  # prompt tokens whose KV came from the prefix cache (not computed)
    is_aborted: bool = False  # set from the event loop thread; read by the scheduler
    matcher: StopStringMatcher = field(init=False)
    arrival_s: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        params = self.params
        self.matcher = StopStringMatcher(params.stop, include_stop=params.include_stop_str_in_output)


def token_delta(
    seq: GenerationState,
    token: int,
    piece: bytes,
    eog: frozenset[int],
    logprobs: list[TokenLogprob] | None,
) -> Delta:
    """The delta a sampled `token` (its text `piece`) makes for `seq`, and whether it ends it: an
    end-of-generation or stop token (unless `ignore_eos`), a stop string (held back across tokens by
    the matcher), or `max_tokens`. A finished delta carries the usage."""
    seq.num_generated += 1
    params = seq.params
    delta = Delta(token_ids=[token], logprobs=logprobs)
    if (token in eog and not params.ignore_eos) or token in params.stop_token_ids:
        delta.text = seq.matcher.flush()
        delta.finish_reason = FinishReason.STOP
        delta.stop_reason = token if token in params.stop_token_ids else None
    else:
        delta.text = seq.matcher.push(piece)
        if seq.matcher.stopped_by is not None:
            delta.finish_reason = FinishReason.STOP
            delta.stop_reason = seq.matcher.stopped_by
        elif seq.num_generated >= seq.max_tokens:
            delta.text += seq.matcher.flush()
            delta.finish_reason = FinishReason.LENGTH
    if delta.finish_reason is not None:
        delta.usage = Usage(len(seq.prompt), seq.num_generated, cached_tokens=seq.num_cached_prompt)
    else:
        seq.next_token = token
    return delta


def prompt_only_delta(seq: GenerationState, prompt_logprobs: list[TokenLogprob | None] | None) -> Delta:
    """The one delta of a sequence with `max_tokens` 0: its prompt was computed (and scored, with
    `prompt_logprobs`) and nothing is generated."""
    return Delta(
        prompt_logprobs=prompt_logprobs,
        finish_reason=FinishReason.LENGTH,
        usage=Usage(len(seq.prompt), 0, cached_tokens=seq.num_cached_prompt),
    )


# (sequence, delta or error) pairs produced by one step, handed to the event loop together.
Outputs = list[tuple[Any, Delta | Exception]]


def check_prompt(
    prompt_tokens: Sequence[int], params: SamplingParams, info: EngineInfo
) -> tuple[list[int], int]:
    """The prompt as a list and the room left after it, or the 4xx error a client must get before
    anything is queued: an empty prompt, ids outside the vocabulary (the prompt's or `logit_bias`'s), or
    prompt + `max_tokens` over the context (worded as OpenAI words it, which clients parse)."""
    prompt = list(prompt_tokens)
    if not prompt:
        raise InvalidRequest("the prompt is empty", param="prompt")
    if any(not 0 <= t < info.vocab_size for t in prompt):
        raise InvalidRequest("the prompt has token ids outside the vocabulary", param="prompt")
    params.check_token_ids(info.vocab_size)
    ensure_fits([len(prompt)], [params.max_tokens], info.max_model_len)
    room = completion_room(len(prompt), info.max_model_len)
    return prompt, room


_request_counter = itertools.count()


def queue_generation(
    bridge: DeltaBridge,
    scheduler: _Submits | None,
    info: EngineInfo,
    new_sequence: Callable[..., GenerationState],
    prompt_tokens: Sequence[int],
    params: SamplingParams,
    request_id: str | None,
) -> AsyncIterator[Delta]:
    """Check a prompt (`check_prompt`), make the engine's sequence for it and stream its deltas."""
    if scheduler is None:
        raise ModelNotLoaded("the engine is not running")
    prompt, room = check_prompt(prompt_tokens, params, info)
    seq = new_sequence(
        request_id=request_id or f"req-{next(_request_counter)}",
        prompt=prompt,
        params=params,
        max_tokens=room if params.max_tokens is None else params.max_tokens,
    )
    return bridge.stream(seq, scheduler)


class _Submits(Protocol):
    def submit(self, seq: Any) -> None: ...

    def abort(self, seq: Any) -> None: ...


class DeltaBridge:
    """Per-sequence queues from the engine thread to the event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[Hashable, asyncio.Queue[Delta | Exception]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_outputs(self, outputs: Outputs) -> None:
        """Called on the engine thread after each step."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, outputs)

    def _deliver(self, outputs: Outputs) -> None:
        for seq, item in outputs:
            queue = self._queues.get(seq)
            if queue is not None:
                queue.put_nowait(item)

    async def stream(self, seq: Hashable, scheduler: _Submits | None) -> AsyncIterator[Delta]:
        """Submit `seq` and yield its deltas until it finishes; leaving early aborts it."""
        if scheduler is None:
            raise ModelNotLoaded("the engine is not running")
        queue: asyncio.Queue[Delta | Exception] = asyncio.Queue()
        self._queues[seq] = queue
        is_finished = False
        scheduler.submit(seq)
        try:
            while not is_finished:
                item = await queue.get()
                if isinstance(item, Exception):
                    is_finished = True
                    raise item
                # A slow reader gets what piled up as one delta: fewer events, same content.
                while item.finish_reason is None and not queue.empty():
                    nxt = queue.get_nowait()
                    if isinstance(nxt, Exception):
                        is_finished = True
                        raise nxt
                    item.extend(nxt)
                is_finished = item.finish_reason is not None
                yield item
        finally:
            self._queues.pop(seq, None)
            if not is_finished:
                scheduler.abort(seq)


IDLE_WAIT_S = 1.0  # an idle engine thread looks for work (and stopping) this often


def release_free_heap() -> None:
    """Give the heap's free pages back to the OS (glibc's `malloc_trim`; nothing where it is missing).

    glibc keeps what a burst freed (a padded batch's KV, activations, request buffers) mapped for reuse, so
    RSS stays at the burst's peak; the engine thread calls this once it has been idle for `IDLE_WAIT_S`
    after some work. It takes milliseconds, with the GIL released (ctypes)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None  # glibc's malloc_trim, False where there is none, None before the first call


class SchedulerThread:
    """The waiting queue, the wake-up event and the thread of a scheduler; subclasses write `_run`,
    which pops `_waiting` (under `_waiting_lock`), keeps `_running`, and skips sequences whose
    `is_aborted` is set."""

    _on_outputs: Any  # Callable[[Outputs], None], set by the subclass

    def __init__(self, thread_name: str, *, batch_wait_s: float = 0.0) -> None:
        self._waiting: deque[Any] = deque()  # appended by the event loop, popped by the engine thread
        self._waiting_lock = threading.Lock()
        self._running: list[Any] = []
        self._wake = threading.Event()
        self._is_stopping = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self.num_steps = 0
        self.last_step_num_seqs = 0
        # Prompt tokens looked up in the prefix cache, and those found there (vLLM's counters).
        self.num_prefix_queries = 0
        self.num_prefix_hits = 0
        # How long an idle engine may wait for the rest of a burst of closed-loop clients (0: never); the
        # subclass reports each sequence that ends by itself to `_returning`.
        self._batch_wait_s = batch_wait_s
        self._returning = ReturningClients()

    # -- called from other threads -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, seq: Any) -> None:
        if self._is_stopping:  # nothing would ever take it
            raise EngineError("the engine has stopped")
        with self._waiting_lock:
            self._waiting.append(seq)
        self._returning.arrived()
        self._wake.set()

    def abort(self, seq: Any) -> None:
        seq.is_aborted = True
        self._wake.set()

    def stop(self) -> None:
        self._is_stopping = True
        self._wake.set()
        self._thread.join(timeout=30)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    # -- the engine thread -----------------------------------------------------------------------
    def _run(self) -> None:
        steps_at_last_trim = 0
        with self._thread_context():
            while not self._is_stopping:
                if not self._running and not self._waiting:
                    is_woken = self._wake.wait(timeout=IDLE_WAIT_S)
                    self._wake.clear()
                    if not is_woken and self.num_steps != steps_at_last_trim:
                        steps_at_last_trim = self.num_steps  # once per idle spell that followed work
                        release_free_heap()
                    continue
                if not self._running and self._batch_wait_s > 0:
                    self._wait_for_returning_clients()
                try:
                    self._step()
                except Exception as exc:  # never let one bad step kill the engine thread
                    log.exception("decode step failed; failing the sequences in flight")
                    self._fail_running(EngineError(f"generation failed: {exc}"))
        self._fail_running(EngineError("the engine is shutting down"))
        with self._waiting_lock:
            left, self._waiting = list(self._waiting), deque()
        if left:
            self._on_outputs([(seq, EngineError("the engine is shutting down")) for seq in left])

    def _wait_for_returning_clients(self) -> None:
        """Before an idle engine starts on what has arrived: while requests that just ended are expected
        back (returning_clients.py says why) and slots are free for them, wait for them, at most
        `_batch_wait_s` in all, so their prompts are computed in one step."""
        deadline = time.monotonic() + self._batch_wait_s
        while not self._is_stopping:
            left_s = deadline - time.monotonic()
            room = self._num_free_slots() - len(self._waiting)
            if left_s <= 0 or room <= 0 or self._returning.expected() == 0:
                return
            self._wake.wait(timeout=left_s)
            self._wake.clear()

    def _num_free_slots(self) -> int:
        """Sequences the engine could admit now."""
        raise NotImplementedError

    def _thread_context(self) -> contextlib.AbstractContextManager[Any]:
        """Entered on the engine thread around every step (e.g. torch's inference mode)."""
        return contextlib.nullcontext()

    def _step(self) -> None:
        """One scheduling step: drop aborted sequences, admit waiting ones, decode, hand out deltas."""
        raise NotImplementedError

    def _fail_running(self, error: Exception) -> None:
        """End every running sequence with `error` and free what it held."""
        raise NotImplementedError


def engine_stats(scheduler: SchedulerThread | None, num_slots: int) -> EngineStats:
    """The live counters `/metrics` reads, from a scheduler (zeros while none runs)."""
    if scheduler is None:
        return EngineStats(0, 0, 0.0, 0, 0)
    return EngineStats(
        num_running=scheduler.num_running,
        num_waiting=scheduler.num_waiting,
        kv_cache_usage=scheduler.num_running / num_slots,
        num_steps=scheduler.num_steps,
        last_step_num_seqs=scheduler.last_step_num_seqs,
        prefix_cache_queries=scheduler.num_prefix_queries,
        prefix_cache_hits=scheduler.num_prefix_hits,
    )
