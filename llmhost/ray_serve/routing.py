"""Which replica a request prefers: the one that has its session or the start of its prompt cached.

A request's *affinity key* names what the engine caches for it:
- `x-session-id: ID` (header): the client's own session, whatever the route;
- `x-llmhost-replica: ID` (header) asks for one replica by its id (operators, the metrics fan-out);
- `/get_observation`: the first trajectory id (the code tool keeps per-trajectory state);
- a conversation (OpenAI chat, Anthropic messages, the simple chat API): its system prompt and first user
  message, which every later turn repeats, so each turn lands where the previous ones are cached;
- a raw prompt (completions, `/predict`) of at least `PREFIX_CHARS` characters: its first `PREFIX_CHARS`.
Anything else (short prompts, batches, token ids, bodies over `MAX_ROUTED_BODY_BYTES`) has no key and goes
to the least busy replica.

Keys map to replicas by rendezvous hashing: every router (one per Serve proxy and ingress replica, on any
node) ranks replicas the same way without sharing state, and when a replica comes or goes only the keys
it held move. A preferred replica that is busier than the least busy by `max_imbalance` requests or more
is passed over for the usual power-of-two choice, so one hot key cannot pile up on one replica.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

SESSION_HEADER = "x-session-id"
REPLICA_HEADER = "x-llmhost-replica"  # request: the replica to prefer; response: the replica that answered
MAX_ROUTED_BODY_BYTES = 1 << 20  # parsing a larger body on the ingress' event loop would stall it
PREFIX_CHARS = 256  # about 64 tokens: a prompt shorter than this has little worth caching


def affinity_key(path: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """The request's affinity key (see the module docstring), or None. `headers` has lower-case names."""
    session = headers.get(SESSION_HEADER, "").strip()
    if session:
        return f"session:{session}"
    if not body or len(body) > MAX_ROUTED_BODY_BYTES:
        return None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # the replica answers the bad body in its face's shape
    if not isinstance(payload, dict):
        return None
    if path == "/get_observation":
        ids = payload.get("trajectory_ids")
        if isinstance(ids, list) and ids and isinstance(ids[0], str):
            return f"trajectory:{ids[0]}"
        return None
    start = _conversation_start(payload)
    if start is None:
        return None
    return "prefix:" + hashlib.blake2b(start.encode(), digest_size=16).hexdigest()


def _conversation_start(payload: dict[str, Any]) -> str | None:
    messages = payload.get("messages")
    if isinstance(messages, list) and messages:
        # Anthropic keeps the system prompt apart from the messages; OpenAI has it as the first message.
        parts = [_text(payload.get("system"))]
        for message in messages:
            if not isinstance(message, dict):
                return None
            parts.append(f"{message.get('role')}:{_text(message.get('content'))}")
            if message.get("role") == "user":
                break
        return "\n".join(parts)
    if isinstance(payload.get("message"), str):  # the simple chat API: `history` holds the earlier turns
        history = payload.get("history")
        for turn in history if isinstance(history, list) else []:
            if isinstance(turn, dict) and turn.get("role") == "user":
                return f"user:{_text(turn.get('content'))}"
        return f"user:{payload['message']}"
    prompt = payload.get("prompt")
    if isinstance(prompt, str) and len(prompt) >= PREFIX_CHARS:
        return prompt[:PREFIX_CHARS]
    return None


def _text(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts (`{"type": "text", "text": ...}`)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(part.get("text") if isinstance(part, dict) else part) for part in content)
    return ""


def rendezvous_order(key: str, replica_ids: Sequence[str]) -> list[str]:
    """`replica_ids` from the most to the least preferred for `key` (highest random weight first)."""

    def weight(replica_id: str) -> bytes:
        return hashlib.blake2b(f"{key}\0{replica_id}".encode(), digest_size=8).digest()

    return sorted(replica_ids, key=weight, reverse=True)


def choose(
    key: str | None,
    pinned: str | None,
    replica_ids: Sequence[str],
    queue_lens: Mapping[str, int | None],
    *,
    max_imbalance: int,
    rng: random.Random | None = None,
) -> list[list[str]]:
    """Ranks of replica ids to try, most preferred first (Serve takes the least busy replica that accepts
    from the first rank, then the next). `queue_lens` holds what the router last heard (None: unknown)."""
    sample = rng.sample if rng is not None else random.sample
    ids = list(replica_ids)
    if len(ids) <= 1:
        return [ids] if ids else []
    if pinned is not None and pinned in ids:
        return [[pinned], _two(sample, [i for i in ids if i != pinned])]
    if key is None or max_imbalance <= 0:
        return [_two(sample, ids)]
    preferred, *rest = rendezvous_order(key, ids)
    known = [n for n in queue_lens.values() if n is not None]
    preferred_len = queue_lens.get(preferred)
    if preferred_len is not None and known and preferred_len - min(known) >= max_imbalance:
        return [_two(sample, ids)]
    return [[preferred], _two(sample, rest)]


def _two(sample: Callable[[list[str], int], list[str]], ids: list[str]) -> list[str]:
    """The power of two choices: two at random, of which Serve takes the less busy."""
    return sample(ids, min(2, len(ids)))
