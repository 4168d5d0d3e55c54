"""Admission control and per-sequence bookkeeping, in one place for every face.

Faces ask for all the sequences of a request at once (`n` choices, a `/predict` batch): either every
one is admitted or the request gets `QueueFull` (429 + Retry-After) before any work starts. Each
admitted stream is wrapped so that its slot is released, its metrics recorded and its deadline enforced
however it ends — finished, failed, cancelled or abandoned by a client that went away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from llmhost.errors import QueueFull, RequestTimeout
from llmhost.server.metrics import RequestMetrics, ServerMetrics
from llmhost.types import Delta


class Admission:
    def __init__(self, max_num_seqs: int, max_queued: int | None) -> None:
        self.num_in_flight = 0
        self.resize(max_num_seqs, max_queued)

    def resize(self, max_num_seqs: int, max_queued: int | None) -> None:
        # None: no bound beyond memory (vLLM's historical default); an operator should set one.
        self.capacity = None if max_queued is None else max_num_seqs + max_queued

    def reserve(self, num_seqs: int) -> None:
        # An idle server admits any single request, however large: a harness that sends its whole
        # question set as one /predict batch must not get a 429 that no retry could ever cure.
        is_idle = self.num_in_flight == 0
        if self.capacity is not None and not is_idle and self.num_in_flight + num_seqs > self.capacity:
            raise QueueFull(
                f"the server is at capacity ({self.num_in_flight} sequences in flight, limit "
                f"{self.capacity}); retry shortly"
            )
        self.num_in_flight += num_seqs

    def release(self, num_seqs: int = 1) -> None:
        self.num_in_flight = max(0, self.num_in_flight - num_seqs)


def open_streams(
    admission: Admission,
    metrics: ServerMetrics,
    starts: Sequence[tuple[int, Callable[[], AsyncIterator[Delta]]]],
    *,
    timeout_s: float | None,
) -> list[TrackedStream]:
    """Admit and start one sequence per `(num_prompt_tokens, start)`, all or none: `start()` returns
    the sequence's stream (an engine generation, or a driver such as the code loop running many)."""
    try:
        admission.reserve(len(starts))
    except QueueFull:
        metrics.rejected("queue_full")
        raise
    streams: list[AsyncIterator[Delta]] = []
    try:
        for _, start in starts:
            streams.append(start())  # an engine validates (context length…) now, before any byte is sent
    except BaseException:
        admission.release(len(starts))
        raise
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    return [
        TrackedStream(stream, admission, RequestMetrics(metrics, num_prompt), deadline, timeout_s)
        for stream, (num_prompt, _) in zip(streams, starts, strict=True)
    ]


class TrackedStream:
    """An engine stream that releases its admission slot and records its metrics exactly once,
    whether it finishes, fails, times out, is closed early, or is never iterated at all."""

    def __init__(
        self,
        stream: AsyncIterator[Delta],
        admission: Admission,
        metrics: RequestMetrics,
        deadline: float | None,
        timeout_s: float | None,
    ) -> None:
        self._stream = stream
        self._admission = admission
        self._metrics = metrics
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._reason = "abort"
        self._is_done = False

    def __aiter__(self) -> TrackedStream:
        return self

    async def __anext__(self) -> Delta:
        if self._is_done:
            raise StopAsyncIteration
        try:
            if self._deadline is None:
                delta = await anext(self._stream)
            else:
                async with asyncio.timeout_at(_loop_time(self._deadline)):
                    delta = await anext(self._stream)
        except StopAsyncIteration:
            await self.aclose()
            raise
        except TimeoutError:
            self._reason = "timeout"
            await self.aclose()
            raise RequestTimeout(self._timeout_s or 0.0) from None
        except Exception:
            self._reason = "error"
            await self.aclose()
            raise
        except BaseException:  # cancelled: the client went away
            await self.aclose()
            raise
        self._metrics.on_tokens(len(delta.token_ids))
        if delta.finish_reason is not None:
            self._reason = str(delta.finish_reason)
            await self.aclose()  # free the slot now, not when the caller gets round to it
        return delta

    async def aclose(self) -> None:
        if self._is_done:
            return
        self._is_done = True
        try:
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                await close()  # cancels the sequence in the engine if it is still running
        finally:
            self._admission.release()
            self._metrics.on_finish(self._reason)

    def __del__(self) -> None:
        # Safety net for a stream dropped without being closed: never leak admission capacity.
        if not self._is_done:
            self._is_done = True
            self._admission.release()


def _loop_time(deadline_monotonic: float) -> float:
    """Convert a time.monotonic() deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline_monotonic - time.monotonic())
