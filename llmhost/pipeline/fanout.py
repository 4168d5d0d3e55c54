"""Running several sequences for one request (`n` choices, a batch of prompts) and merging them.

Every face that fans out uses this, so cancellation is handled once: leaving the merged iterator
early (client gone, error) closes every engine stream beneath it, which frees their sequences.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.types import Receive

from llmhost.errors import ClientDisconnected
from llmhost.types import Delta

_DONE = object()


async def merge_streams(streams: Sequence[AsyncIterator[Delta]]) -> AsyncIterator[tuple[int, Delta]]:
    """Yield `(stream index, delta)` in arrival order; the first error cancels the rest and is raised."""
    if len(streams) == 1:  # the common case pays for no tasks
        try:
            async for delta in streams[0]:
                yield 0, delta
        finally:
            await _aclose(streams[0])
        return

    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Delta]) -> None:
        try:
            async for delta in stream:
                queue.put_nowait((index, delta))
        except Exception as exc:
            queue.put_nowait((index, exc))
        finally:
            queue.put_nowait((index, _DONE))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        num_open = len(tasks)
        while num_open:
            index, item = await queue.get()
            if item is _DONE:
                num_open -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await _aclose(stream)


async def _aclose(stream: AsyncIterator[Delta]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


async def collect(
    streams: Sequence[AsyncIterator[Delta]], *, until_disconnected: Receive | None = None
) -> list[Delta]:
    """Run every stream to its end, each into one `Delta` holding its whole output.

    With `until_disconnected` (the request's ASGI `receive`), a client that goes away before the
    answer is ready cancels the work, freeing the sequences at once."""
    if until_disconnected is None:
        return await _collect(streams)
    work = asyncio.create_task(_collect(streams))
    watcher = asyncio.create_task(_wait_for_disconnect(until_disconnected))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work.done():
            work.cancel()  # closes the engine streams beneath it, freeing their sequences
        watcher.cancel()
        await asyncio.gather(work, watcher, return_exceptions=True)
    if work.cancelled():
        raise ClientDisconnected("the client closed the connection before the answer was ready")
    return work.result()


async def _collect(streams: Sequence[AsyncIterator[Delta]]) -> list[Delta]:
    results = [Delta() for _ in streams]
    async for index, delta in merge_streams(streams):
        results[index].extend(delta)
    return results


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
