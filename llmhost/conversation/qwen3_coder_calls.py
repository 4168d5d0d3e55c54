"""Qwen3-Coder tool calls (XML) in model output.

```
<tool_call>
<function=get_weather>
<parameter=city>
Paris
</parameter>
<parameter=days>
3
</parameter>
</function>
</tool_call>
```

Qwen3-Coder and newer Qwen models write calls this way; vLLM (`--tool-call-parser qwen3_coder`), SGLang
and llama.cpp read them. `Qwen3CoderParser` has the interface of the hermes `ToolCallParser`: it reads
streamed text deltas, reports each call's name first (with a fresh id), then its arguments as JSON text
in pieces: `{"city": "` and the string as it is written, `"` when it ends, `, "days": 3` once a value
that is not a string is complete, `}` at `</function>`. `parse_qwen3_coder_calls` feeds it the whole text,
so a streamed and a non-streamed answer agree.

Values take the type the function's JSON Schema gives the parameter, as vLLM does: a string parameter
(or one the schema does not describe) keeps the text as written, less the newline after the opening tag
and the one before the closing tag, which belong to the format; any other is parsed as JSON (booleans in
any case, Python-style literals for objects and arrays) and stays the text when it does not parse.
Unlike vLLM, `null` in a string parameter stays the string "null".

Lenient where models are: `<function=…>` without `<tool_call>` around it, a value whose `</parameter>` is
missing (it ends at the next `<parameter=` or `</function>`), several functions in one `<tool_call>`, no
`</tool_call>` after `</function>`, and a hermes JSON body inside `<tool_call>`. Malformed output is never
lost: a block that does not start `<function=NAME>` is content again, tags included; a call whose name
already streamed and that is cut before its `</function>` (max_tokens) is marked invalid, and the
non-streamed answer puts its text into the content instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from llmhost.conversation.schema_values import convert_value, schema_types
from llmhost.conversation.toolcalls import (
    TOOL_CALL_END,
    TOOL_CALL_START,
    ParsedDelta,
    StreamingCallParser,
    ToolCall,
    ToolCallDelta,
    new_call_id,
    parse_hermes_body,
    partial_tag_len,
)

log = logging.getLogger("llmhost.conversation")

FUNCTION_START = "<function="
FUNCTION_END = "</function>"
PARAMETER_START = "<parameter="
PARAMETER_END = "</parameter>"
# What ends a parameter's value: its own end tag or, when the model left that out, what comes next.
_VALUE_ENDS = (PARAMETER_END, PARAMETER_START, FUNCTION_END, TOOL_CALL_END)
_MAX_NAME_LEN = 256  # a `<function=` or `<parameter=` whose `>` does not come within this is not a tag

# Parser states.
_TEXT = 0  # content, watching for `<tool_call>` or `<function=`
_OPEN = 1  # after `<tool_call>`, before `<function=`
_NAME = 2  # reading the function's name, up to `>`
_BODY = 3  # inside the function, between parameters
_PARAM_NAME = 4  # reading a parameter's name, up to `>`
_VALUE = 5  # reading a parameter's value
_AFTER = 6  # after `</function>`, before `</tool_call>`
_FOREIGN = 7  # a `<tool_call>` block that is not XML: held until `</tool_call>`, then read as hermes JSON
_BROKEN = 8  # a streamed call that cannot be completed: skip to the block's end


class Qwen3CoderParser(StreamingCallParser):
    """Splits streamed model text into content and tool-call deltas (see the module docstring).

    `tools` are the request's tools (OpenAI's `{"type": "function", "function": {…}}` shape); their
    parameter schemas type the values."""

    def __init__(self, tools: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__()
        self._properties = _properties_by_function(tools)
        self._state = _TEXT
        self._block = ""  # the current block's text consumed so far, from its first tag
        self._is_wrapped = False  # the current block opened with `<tool_call>`
        self._num_params = 0
        self._param_types: frozenset[str] = frozenset()
        self._is_text_param = True
        self._pending_key = ""  # a typed value's `"name": ` part, sent with the value once it is complete
        self._is_value_started = False

    def _release(self, out: ParsedDelta, held: str) -> None:
        state = self._state
        if state == _TEXT:
            self._emit_content(out, held.lstrip() if self._after_call else held)
        elif state == _AFTER:  # the call is complete; a cut `</tool_call>` is dropped, other text kept
            rest = held.strip()
            if rest and not TOOL_CALL_END.startswith(rest):
                self._emit_content(out, held.lstrip())
        elif state == _FOREIGN:
            self._close_foreign(out, held)
        elif state in (_OPEN, _NAME):
            self._give_back(out, held)
        else:  # cut inside the function: its name went out, so it is an invalid call
            self._block += held
            self._end_call(is_valid=False)

    # -- one step of the state machine; True when it should run again ---------------------------
    def _step(self, out: ParsedDelta) -> bool:
        state = self._state
        if state == _TEXT:
            return self._step_text(out)
        if state == _OPEN:
            return self._step_open()
        if state == _NAME:
            return self._step_name(out)
        if state == _BODY:
            return self._step_body(out)
        if state == _PARAM_NAME:
            return self._step_param_name(out)
        if state == _VALUE:
            return self._step_value(out)
        if state == _AFTER:
            return self._step_after()
        if state == _FOREIGN:
            return self._step_foreign(out)
        return self._step_broken()

    def _step_text(self, out: ParsedDelta) -> bool:
        tag = self._scan_text(out, (TOOL_CALL_START, FUNCTION_START))
        if tag is None:
            return False
        self._block = tag
        self._is_wrapped = tag == TOOL_CALL_START
        self._state = _OPEN if self._is_wrapped else _NAME
        return True

    def _step_open(self) -> bool:
        stripped = self._held.lstrip()
        if stripped.startswith(FUNCTION_START):
            self._take(len(self._held) - len(stripped) + len(FUNCTION_START))
            self._state = _NAME
            return True
        if FUNCTION_START.startswith(stripped):
            return False
        self._state = _FOREIGN
        return True

    def _step_name(self, out: ParsedDelta) -> bool:
        name, end = _read_name(self._held)
        if end == 0:
            return False
        if name is None:
            self._give_back(out, "")
            return True
        self._take(end)
        call = ToolCall(new_call_id(), name, "")
        self.calls.append(call)
        out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, id=call.id, name=call.name))
        self._num_params = 0
        self._state = _BODY
        return True

    def _step_body(self, out: ParsedDelta) -> bool:
        stripped = self._held.lstrip()
        ws = len(self._held) - len(stripped)
        if stripped.startswith(PARAMETER_START):
            self._take(ws + len(PARAMETER_START))
            self._state = _PARAM_NAME
            return True
        for tag in (FUNCTION_END, TOOL_CALL_END):
            if stripped.startswith(tag) and (tag == FUNCTION_END or self._is_wrapped):
                self._take(ws + len(tag))
                self._close_arguments(out)
                if tag == FUNCTION_END and self._is_wrapped:
                    self._state = _AFTER
                return True
        self._take(ws)
        if not stripped or any(
            t.startswith(stripped) for t in (PARAMETER_START, FUNCTION_END, TOOL_CALL_END)
        ):
            return False
        # Text between parameters means nothing in this format: skip it, up to the next tag.
        skip = stripped.find("<", 1)
        log.debug("text between tool-call parameters skipped: %r", stripped[: 80 if skip < 0 else skip])
        self._take(len(stripped) if skip < 0 else skip)
        return skip >= 0

    def _step_param_name(self, out: ParsedDelta) -> bool:
        name, end = _read_name(self._held)
        if end == 0:
            return False
        if name is None:
            self._state = _BROKEN
            return True
        self._take(end)
        self._param_types = schema_types(self._properties.get(self.calls[-1].name, {}).get(name))
        self._is_text_param = self._param_types <= {"string"}
        self._is_value_started = False
        key = ("{" if self._num_params == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": "
        self._num_params += 1
        if self._is_text_param:  # a string streams as it is written
            self._emit_args(out, key + '"')
        else:
            self._pending_key = key
        self._state = _VALUE
        return True

    def _step_value(self, out: ParsedDelta) -> bool:
        if not self._is_value_started:
            if not self._held:
                return False
            if self._held[0] == "\n":  # the format's newline after `<parameter=…>`
                self._take(1)
            self._is_value_started = True
        buf = self._held
        ends = [(i, tag) for tag in _VALUE_ENDS if (i := buf.find(tag)) != -1]
        if ends:
            end, tag = min(ends)
            value = buf[:end].removesuffix("\n")  # the format's newline before the end tag
            if self._is_text_param:
                self._emit_args(out, _json_string_body(value) + '"')
            else:
                converted = convert_value(value, self._param_types)
                self._emit_args(out, self._pending_key + json.dumps(converted, ensure_ascii=False))
            self._take(end + (len(tag) if tag == PARAMETER_END else 0))
            self._state = _BODY
            return True
        if self._is_text_param:
            safe = len(buf) - max(partial_tag_len(buf, tag) for tag in _VALUE_ENDS)
            if safe and buf[safe - 1] == "\n":  # may be the newline before the end tag
                safe -= 1
            if safe:
                self._emit_args(out, _json_string_body(buf[:safe]))
                self._take(safe)
        return False

    def _step_after(self) -> bool:
        stripped = self._held.lstrip()
        ws = len(self._held) - len(stripped)
        if stripped.startswith(TOOL_CALL_END):
            self._take(ws + len(TOOL_CALL_END))
            self._state = _TEXT
            return True
        if stripped.startswith(FUNCTION_START):  # another function in the same block
            self._held = stripped[len(FUNCTION_START) :]
            self._block = FUNCTION_START
            self._pending_ws = ""
            self._state = _NAME
            return True
        if not stripped or TOOL_CALL_END.startswith(stripped) or FUNCTION_START.startswith(stripped):
            return False
        self._state = _TEXT  # no `</tool_call>`: what follows is content again
        return True

    def _step_foreign(self, out: ParsedDelta) -> bool:
        end = self._held.find(TOOL_CALL_END)
        if end == -1:
            return False
        body, self._held = self._held[:end], self._held[end + len(TOOL_CALL_END) :]
        self._close_foreign(out, body, closed=True)
        return True

    def _step_broken(self) -> bool:
        end_tag = TOOL_CALL_END if self._is_wrapped else FUNCTION_END
        end = self._held.find(end_tag)
        if end == -1:
            return False
        self._take(end + len(end_tag))
        self._end_call(is_valid=False)
        return True

    # -- helpers -----------------------------------------------------------------------------------
    def _take(self, n: int) -> None:
        """Consume `n` characters of held text into the current block."""
        self._block += self._held[:n]
        self._held = self._held[n:]

    def _close_arguments(self, out: ParsedDelta) -> None:
        self._emit_args(out, "{}" if self._num_params == 0 else "}")
        self._end_call(is_valid=True)

    def _end_call(self, *, is_valid: bool) -> None:
        call = self.calls[-1]
        call.raw, call.is_valid = self._block, is_valid
        if not is_valid:
            log.warning("tool call '%s' is malformed or cut short; kept as content", call.name)
            self._content_parts.append(self._pending_ws + call.raw)
        self._state = _TEXT
        self._after_call = True

    def _give_back(self, out: ParsedDelta, tail: str) -> None:
        """The block is not a call (its name never went out): it is content again, tags and all."""
        log.debug("not a valid tool call, kept as content: %r", self._block[:200])
        self._emit_content(out, self._pending_ws + self._block + tail)
        self._block = ""
        self._state = _TEXT
        self._after_call = False

    def _close_foreign(self, out: ParsedDelta, body: str, *, closed: bool = False) -> None:
        """A `<tool_call>` block in hermes JSON: a call when it parses, else content again."""
        self._block += body + (TOOL_CALL_END if closed else "")
        parsed = parse_hermes_body(body)
        if parsed is None:
            self._give_back(out, "")
            return
        call = ToolCall(new_call_id(), parsed[0], parsed[1], self._block)
        self.calls.append(call)
        index = len(self.calls) - 1
        out.tool_calls.append(ToolCallDelta(index, id=call.id, name=call.name))
        out.tool_calls.append(ToolCallDelta(index, arguments=call.arguments))
        self._state = _TEXT
        self._after_call = True

    def _emit_args(self, out: ParsedDelta, text: str) -> None:
        if text:
            self.calls[-1].arguments += text
            out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, arguments=text))


def parse_qwen3_coder_calls(
    text: str, tools: Sequence[Mapping[str, Any]] = ()
) -> tuple[str | None, list[ToolCall]]:
    """`(content, calls)` of a finished output. Content is None when the output is only calls."""
    parser = Qwen3CoderParser(tools)
    parser.feed(text)
    parser.finish()
    return parser.content(), parser.valid_calls()


def _read_name(text: str) -> tuple[str | None, int]:
    """A tag's name up to its `>`: `(name, characters up to and with ">")`; `(None, 0)` while it may
    still come; `(None, -1)` when this is no tag (a line break, a `<` or nothing before `>`, or no `>`
    within `_MAX_NAME_LEN`)."""
    end = text.find(">")
    head = text if end == -1 else text[:end]
    if "\n" in head or "<" in head or len(head) > _MAX_NAME_LEN:
        return None, -1
    if end == -1:
        return None, 0
    name = head.strip()
    return (name, end + 1) if name else (None, -1)


def _json_string_body(text: str) -> str:
    """`text` escaped as inside a JSON string (without the quotes): escaping is per character, so
    pieces escaped apart join into the escaping of the whole."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


# -- the parameters each function declares ------------------------------------------------------------
def _properties_by_function(tools: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        out[function["name"]] = dict(properties) if isinstance(properties, Mapping) else {}
    return out
