"""Stored responses (`store: true`, OpenAI's default), for `previous_response_id` and
`GET`/`DELETE /v1/responses/{id}`: in memory, one least-recently-used store per API key.

A stored response keeps what its successor needs: the response object and the conversation it ended
(every earlier turn's input and output, then its own input and output; not its `instructions`, which
OpenAI does not carry over either). Each API key (`--api-key`) sees only its own responses; without
keys every client shares one store. Each store is bounded by a number of responses and a number of
bytes (`--responses-store-max-items`, `--responses-store-max-mb`, per key); the least recently used go
first, and a response too large for the store by itself is not kept. Nothing survives a restart.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from .items import InputItem
from .objects import ResponseObject

_ITEMS = TypeAdapter(list[InputItem])

log = logging.getLogger("llmhost.responses")


@dataclass(frozen=True)
class StoredResponse:
    response: ResponseObject
    conversation: Sequence[Any]  # input items (items.py), earlier turns' outputs among them
    num_conversation_bytes: int  # the conversation's JSON, counted once per turn as it grew

    @property
    def num_bytes(self) -> int:
        """What it counts against its store: its conversation, and its response's JSON on top.
        Earlier turns are shared with the responses they came from (the same objects), so they are
        counted more than once: a bound, never an underestimate."""
        return self.num_conversation_bytes + len(self.response.model_dump_json())


class _KeyStore:
    def __init__(self) -> None:
        self.entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self.num_bytes = 0

    def pop(self, response_id: str) -> StoredResponse | None:
        entry = self.entries.pop(response_id, None)
        if entry is not None:
            self.num_bytes -= entry.num_bytes
        return entry


class ResponseStore:
    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._stores: dict[str | None, _KeyStore] = {}  # by API key id (None: no keys configured)

    @property
    def is_enabled(self) -> bool:
        return self.max_items > 0 and self.max_bytes > 0

    def put(
        self,
        owner: str | None,
        response: ResponseObject,
        earlier: StoredResponse | None,
        new_items: Sequence[Any],
    ) -> None:
        """Keep `response` for `owner`, with the conversation it ended: `earlier`'s (the response it
        continued) and `new_items` (its input and output). The least recently used responses that no
        longer fit are dropped."""
        if not self.is_enabled:
            return
        conversation = [*(earlier.conversation if earlier else ()), *new_items]
        num_bytes = (earlier.num_conversation_bytes if earlier else 0) + len(
            _ITEMS.dump_json(list(new_items))
        )
        entry = StoredResponse(response, conversation, num_bytes)
        if entry.num_bytes > self.max_bytes:
            log.warning(
                "response %s (%d bytes) is larger than the store (%d bytes per key); not stored",
                response.id,
                entry.num_bytes,
                self.max_bytes,
            )
            return
        store = self._stores.setdefault(owner, _KeyStore())
        store.pop(response.id)
        store.entries[response.id] = entry
        store.num_bytes += entry.num_bytes
        while len(store.entries) > self.max_items or store.num_bytes > self.max_bytes:
            store.pop(next(iter(store.entries)))

    def get(self, owner: str | None, response_id: str) -> StoredResponse | None:
        store = self._stores.get(owner)
        entry = store.entries.get(response_id) if store is not None else None
        if entry is not None:
            store.entries.move_to_end(response_id)  # type: ignore[union-attr]
        return entry

    def delete(self, owner: str | None, response_id: str) -> bool:
        store = self._stores.get(owner)
        return store is not None and store.pop(response_id) is not None

    def num_stored(self, owner: str | None) -> int:
        store = self._stores.get(owner)
        return len(store.entries) if store is not None else 0
