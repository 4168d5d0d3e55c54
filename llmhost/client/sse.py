"""Reading a server-sent event stream: the `data` payload of each event of an httpx streaming response.

Every llmhost reader of an SSE stream goes through here (the Python clients, the upstream engine), so the
decoding is httpx-sse's, done as the SSE spec says: lines end in LF, CR or CRLF, an event's `data:` lines
are joined with "\\n", comments (`: ping`) and other fields are skipped, and an event split across network
chunks is put back together. `[DONE]` is passed on like any payload: what it ends is the caller's call.
No web framework here: engines import this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
from httpx_sse import EventSource, SSEError


class NotAnEventStream(ValueError):
    """A 2xx answer whose Content-Type is not `text/event-stream`. httpx-sse raises it as a transport
    error, which every caller would report as a lost connection; a ValueError reads as a bad answer."""


def iter_sse_data(response: httpx.Response) -> Iterator[str]:
    """The `data` of each event of a (sync) streaming response, in order. An event without data is
    skipped: httpx-sse dispatches one for an `event:`-only block, and for every blank line once an `id:`
    has been seen."""
    try:
        for event in EventSource(response).iter_sse():
            if event.data:
                yield event.data
    except SSEError as exc:
        raise NotAnEventStream(f"the answer is not an event stream: {exc}") from None


async def aiter_sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """`iter_sse_data` for an async streaming response."""
    try:
        async for event in EventSource(response).aiter_sse():
            if event.data:
                yield event.data
    except SSEError as exc:
        raise NotAnEventStream(f"the answer is not an event stream: {exc}") from None


def is_done(data: str) -> bool:
    """Whether a payload is the OpenAI stream's closing `data: [DONE]`."""
    return data.strip() == "[DONE]"
