"""Grammars that make a forced tool call well-formed: the arguments follow the function's JSON Schema.

`tool_choice` `required` or a named function pre-fills the start of the call (`tool_prompt.py`); on an
engine that enforces grammars, what the model writes after that pre-fill is constrained too:

- named function (pre-fill `<tool_call>\\n{"name": "f", "arguments": `): `ARGS(f) "}"`;
- `required` with several functions (pre-fill `<tool_call>\\n{"name": "`): one of
  `f", "arguments": ARGS(f) "}"` for each function `f`.

`ARGS(f)` is the function's `parameters` schema as GBNF (`structured.schema_to_grammar`); a schema that
cannot be enforced exactly falls back to any JSON object, so an exotic schema never fails a request.
The call's closing `</tool_call>` is left out: the hermes parser takes a complete call without it, and
the grammar being complete lets the model end its turn right there.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from llmhost.conversation.structured import json_object_grammar, schema_to_grammar
from llmhost.errors import InvalidRequest

log = logging.getLogger("llmhost.tools")

_RULE_NAME = re.compile(r"[a-zA-Z0-9-]+")


def forced_call_grammar(tools: Sequence[dict[str, Any]], name: str | None) -> str:
    """The grammar for what follows the pre-fill of a forced call (see the module docstring)."""
    functions = [t["function"] for t in tools]
    if name is not None:
        function = next(f for f in functions if f["name"] == name)
        return _join('root ::= a0-root "}"', [_prefixed(_arguments_grammar(function), "a0-")])
    alternatives, grammars = [], []
    for i, function in enumerate(functions):
        head = json.dumps(function["name"], ensure_ascii=False)[1:] + ', "arguments": '
        alternatives.append(f"{_gbnf_literal(head)} a{i}-root")
        grammars.append(_prefixed(_arguments_grammar(function), f"a{i}-"))
    return _join(f'root ::= ( {" | ".join(alternatives)} ) "}}"', grammars)


def _arguments_grammar(function: dict[str, Any]) -> str:
    schema = function.get("parameters") or {"type": "object"}
    try:
        return schema_to_grammar(schema)
    except InvalidRequest as exc:
        log.info("tool %r: arguments constrained to any JSON object (%s)", function["name"], exc.message)
        return json_object_grammar()


def _join(root: str, grammars: list[str]) -> str:
    return "\n".join([root, *grammars]) + "\n"


def _gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _prefixed(grammar: str, prefix: str) -> str:
    """`grammar` with every rule name (definitions and references) prefixed, so several grammars can
    live in one without their `root`, `space`, `string`… colliding. Literals, character classes and
    comments are copied as they are."""
    out: list[str] = []
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c in '"[':  # a literal or a character class, with backslash escapes
            close = '"' if c == '"' else "]"
            j = i + 1
            while j < n and grammar[j] != close:
                j += 2 if grammar[j] == "\\" else 1
            out.append(grammar[i : j + 1])
            i = j + 1
        elif c == "#":  # a comment, to the end of the line
            j = grammar.find("\n", i)
            j = n if j < 0 else j
            out.append(grammar[i:j])
            i = j
        elif c == "{":  # a repetition count, {m,n}: not names
            j = grammar.index("}", i)
            out.append(grammar[i : j + 1])
            i = j + 1
        elif (match := _RULE_NAME.match(grammar, i)) is not None and not c.isdigit():
            out.append(prefix + match.group())
            i = match.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)
