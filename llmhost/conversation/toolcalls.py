"""Hermes-style tool calls (`<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`) in model output.

Qwen2.5, Qwen3, Hermes and any ChatML model prompted with llmhost's tool block write calls this way.
`ToolCallParser` reads them from streamed text deltas: per call it first reports the name (with a fresh
id), then the arguments text in pieces as the model writes them, as vLLM's `hermes` tool parser does.
`parse_tool_calls` is the same parser fed the whole text, so a streamed and a non-streamed answer
always agree.

The parser works on text, not token ids, so it serves every engine and tokenizer: a tag may arrive
split over deltas (`"<tool"` + `"_call>"`), and partial tags are held back, never emitted as content.

Malformed calls are never lost. A block whose start is not `{"name": "…", "arguments": {` is held
until `</tool_call>` (or the end) and then parsed whole: valid JSON with a name is a call, anything
else goes back to the content, tags included. A call whose name was already streamed and whose
arguments then turn out broken (invalid JSON, cut by max_tokens) cannot be taken back from a stream;
it is marked invalid, and the non-streamed answer puts its raw text into the content instead.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("llmhost.conversation")

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"

# A call whose name comes first and whose arguments are an object: stream it as it is written.
_STREAMABLE_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"([^"\\]+)"\s*,\s*"arguments"\s*:\s*(?=\{)')
_CALL_TAIL = re.compile(r"\s*\}\s*")


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCallDelta:
    """One piece of a streamed call: its start (`name` and `id` set) or a piece of its arguments."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    raw: str = ""  # the whole block, tags included (what goes back to content when it is invalid)
    is_valid: bool = True


@dataclass
class ParsedDelta:
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


# Parser states.
_TEXT = 0  # content, watching for `<tool_call>`
_HEADER = 1  # inside a block, before the name is known
_ARGS = 2  # streaming the arguments object
_TAIL = 3  # arguments complete, waiting for `}` and `</tool_call>`
_BUFFERED = 4  # not streamable: hold the block until `</tool_call>`, then parse it whole
_BROKEN = 5  # a streamed call's arguments broke: skip to `</tool_call>`


class StreamingCallParser:
    """What the streaming parsers of every call format share (`Qwen3CoderParser` is the other): the
    calls found, the content around them, and the feed/finish protocol.

    Feed each text delta to `feed()`, then call `finish()` once when the sequence ends. Whitespace
    between content and calls (`"Let me check.\\n\\n<tool_call>"`, `"</tool_call>\\n"`) is dropped; to
    do that while streaming, trailing whitespace of the content is held until the next delta decides.
    A subclass runs its state machine in `_step` and releases what it holds at the end in `_release`.
    """

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []  # every call started, valid or not, in order
        self._held = ""  # text received and not consumed yet
        self._pending_ws = ""  # whitespace before a block: given back with it if it is not a call
        self._after_call = False  # the content section starts right after a call: drop its whitespace
        self._content_parts: list[str] = []  # non-stream view: content, including invalid blocks
        self._is_finished = False

    @property
    def has_calls(self) -> bool:
        return bool(self.calls)

    def feed(self, text: str) -> ParsedDelta:
        if self._is_finished:
            raise RuntimeError("feed() after finish()")
        self._held += text
        out = ParsedDelta()
        while self._step(out):
            pass
        return out

    def finish(self) -> ParsedDelta:
        """Release what was held: the sequence ended, so no tag can complete any more."""
        out = ParsedDelta()
        if self._is_finished:
            return out
        self._is_finished = True
        held, self._held = self._held, ""
        self._release(out, held)
        return out

    def content(self) -> str | None:
        """Everything that is not a valid call, as the non-streamed answer's `content`."""
        text = "".join(self._content_parts)
        if self.valid_calls() and not text.strip():
            return None
        return text

    def valid_calls(self) -> list[ToolCall]:
        return [c for c in self.calls if c.is_valid]

    def _step(self, out: ParsedDelta) -> bool:
        """One step of the state machine over `_held`; True when it should run again."""
        raise NotImplementedError

    def _release(self, out: ParsedDelta, held: str) -> None:
        """At the end: what `held` (the text not consumed) and the state it was left in amount to."""
        raise NotImplementedError

    def _scan_text(self, out: ParsedDelta, tags: tuple[str, ...]) -> str | None:
        """In content: emit it up to the first of `tags` and return that tag, `_held` then starting
        after it; with none, emit what cannot be the start of one (or whitespace before one), hold the
        rest and return None."""
        buf = self._held
        if self._after_call:
            buf = buf.lstrip()
            if not buf:
                self._held = ""
                return None
        starts = [(i, tag) for tag in tags if (i := buf.find(tag)) != -1]
        if starts:
            i, tag = min(starts)
            before = buf[:i].rstrip()
            self._emit_content(out, before)
            self._pending_ws = buf[len(before) : i]  # given back if the block is not a call
            self._held = buf[i + len(tag) :]
            return tag
        cut = len(buf) - max(partial_tag_len(buf, tag) for tag in tags)
        while cut and buf[cut - 1].isspace():  # may be the whitespace before a call
            cut -= 1
        if cut:
            self._emit_content(out, buf[:cut])
            self._after_call = False
        self._held = buf[cut:]
        return None

    def _emit_content(self, out: ParsedDelta, text: str) -> None:
        if text:
            out.content += text
            self._content_parts.append(text)


class ToolCallParser(StreamingCallParser):
    """Hermes calls in streamed model text (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._state = _TEXT
        # In a block, `_held` is the block's text after `<tool_call>`.
        self._scan = 0  # ARGS: how far the arguments were scanned (offset in `_held`)
        self._args_start = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def _release(self, out: ParsedDelta, held: str) -> None:
        if self._state == _TEXT:
            if self._after_call:
                held = held.lstrip()
            self._emit_content(out, held)
        elif self._state == _HEADER or self._state == _BUFFERED:
            self._close_buffered(out, held, closed=False)
        else:  # cut inside the arguments or before `</tool_call>`: valid only if the JSON is complete
            call = self.calls[-1]
            is_valid = (
                self._state == _TAIL and _is_closing_tail(held[self._scan :]) and _is_json(call.arguments)
            )
            self._end_call(call, held, is_valid)

    # -- one step of the state machine; True when it should run again ---------------------------
    def _step(self, out: ParsedDelta) -> bool:
        if self._state == _TEXT:
            return self._step_text(out)
        if self._state == _HEADER:
            return self._step_header(out)
        if self._state == _ARGS:
            return self._step_args(out)
        if self._state == _TAIL:
            return self._step_tail(out)
        if self._state == _BROKEN:
            return self._step_broken()
        return self._step_buffered(out)

    def _step_text(self, out: ParsedDelta) -> bool:
        if self._scan_text(out, (TOOL_CALL_START,)) is None:
            return False
        self._state = _HEADER
        return True

    def _step_header(self, out: ParsedDelta) -> bool:
        end = self._held.find(TOOL_CALL_END)
        head = self._held if end == -1 else self._held[:end]
        match = _STREAMABLE_HEADER.match(head)
        if match is not None:
            call = ToolCall(new_call_id(), match.group(1), "")
            self.calls.append(call)
            out.tool_calls.append(ToolCallDelta(self._index(call), id=call.id, name=call.name))
            self._state = _ARGS
            self._args_start = self._scan = match.end()
            self._depth, self._in_string, self._escaped = 0, False, False
            return True
        if end != -1 or _cannot_be_streamable(head):
            self._state = _BUFFERED
            return True
        return False

    def _step_args(self, out: ParsedDelta) -> bool:
        buf = self._held
        i = self._scan
        while i < len(buf):
            ch = buf[i]
            i += 1
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    break
            elif ch == "<":  # never valid JSON outside a string: most likely `</tool_call>` came early
                self._emit_args(out, buf[self._scan : i - 1])
                self._scan = i - 1
                self._state = _BROKEN
                return True
        self._emit_args(out, buf[self._scan : i])
        self._scan = i
        if self._depth == 0:
            self._state = _TAIL
            return True
        return False

    def _step_tail(self, out: ParsedDelta) -> bool:
        end = self._held.find(TOOL_CALL_END, self._scan)
        if end == -1:
            if not _could_close(self._held[self._scan :]):
                self._state = _BROKEN
                return True
            return False
        call = self.calls[-1]
        is_valid = _is_closing_tail(self._held[self._scan : end]) and _is_json(call.arguments)
        self._end_call(call, self._held[: end + len(TOOL_CALL_END)], is_valid)
        self._held = self._held[end + len(TOOL_CALL_END) :]
        return True

    def _step_broken(self) -> bool:
        """A streamed call that cannot be completed: skip to the block's end (kept as its raw text)."""
        end = self._held.find(TOOL_CALL_END, self._scan)
        if end == -1:
            return False
        self._end_call(self.calls[-1], self._held[: end + len(TOOL_CALL_END)], False)
        self._held = self._held[end + len(TOOL_CALL_END) :]
        return True

    def _step_buffered(self, out: ParsedDelta) -> bool:
        end = self._held.find(TOOL_CALL_END)
        if end == -1:
            return False
        body, self._held = self._held[:end], self._held[end + len(TOOL_CALL_END) :]
        self._close_buffered(out, body, closed=True)
        return True

    # -- helpers -----------------------------------------------------------------------------------
    def _close_buffered(self, out: ParsedDelta, body: str, *, closed: bool) -> None:
        """A block held whole: a call when it parses, else content again (tags and all)."""
        raw = TOOL_CALL_START + body + (TOOL_CALL_END if closed else "")
        parsed = parse_hermes_body(body)
        if parsed is None:
            log.debug("not a valid tool call, kept as content: %r", raw[:200])
            self._emit_content(out, self._pending_ws + raw)
            self._state = _TEXT
            self._after_call = False
            return
        call = ToolCall(new_call_id(), parsed[0], parsed[1], raw)
        self.calls.append(call)
        index = self._index(call)
        out.tool_calls.append(ToolCallDelta(index, id=call.id, name=call.name))
        if call.arguments:
            out.tool_calls.append(ToolCallDelta(index, arguments=call.arguments))
        self._state = _TEXT
        self._after_call = True

    def _end_call(self, call: ToolCall, block: str, is_valid: bool) -> None:
        """`block` is the call's text after `<tool_call>`, up to and with `</tool_call>` if it came."""
        call.raw, call.is_valid = TOOL_CALL_START + block, is_valid
        if not is_valid:
            log.warning("tool call '%s' has malformed arguments; kept as content", call.name)
            self._content_parts.append(self._pending_ws + call.raw)
        self._state = _TEXT
        self._after_call = True

    def _emit_args(self, out: ParsedDelta, text: str) -> None:
        if text:
            call = self.calls[-1]
            call.arguments += text
            out.tool_calls.append(ToolCallDelta(self._index(call), arguments=text))

    def _index(self, call: ToolCall) -> int:
        return self.calls.index(call)


def parse_tool_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """`(content, calls)` of a finished output. Content is None when the output is only calls."""
    parser = ToolCallParser()
    parser.feed(text)
    parser.finish()
    return parser.content(), parser.valid_calls()


def parse_hermes_body(body: str) -> tuple[str, str] | None:
    """`(name, arguments JSON)` of a block's text, or None when it is not a call."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        return (value["name"], args) if _is_json(args) else None
    return value["name"], json.dumps(args, ensure_ascii=False)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _is_closing_tail(text: str) -> bool:
    return _CALL_TAIL.fullmatch(text) is not None


def _could_close(text: str) -> bool:
    """Whether `text` can still become `}` + whitespace + `</tool_call>`."""
    stripped = text.lstrip()
    if not stripped.startswith("}"):
        return not stripped
    rest = stripped[1:].lstrip()
    return TOOL_CALL_END.startswith(rest)


def _cannot_be_streamable(head: str) -> bool:
    """True once the block's start can no longer become a streamable header."""
    stripped = head.lstrip()
    if not stripped:
        return False
    if stripped[0] != "{":
        return True
    # Name first is the usual order; any other first key goes to the buffered path.
    key = stripped[1:].lstrip()
    return bool(key) and not '"name"'.startswith(key[:6]) and not key.startswith('"name"')


def partial_tag_len(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def call_to_dict(call: ToolCall) -> dict[str, Any]:
    """A finished call in the OpenAI `message.tool_calls[i]` shape."""
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
