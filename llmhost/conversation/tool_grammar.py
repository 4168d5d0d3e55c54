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

from llmhost.conversation.schema_values import schema_types
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


# -- Qwen3-Coder's XML calls ---------------------------------------------------------------------------
# A value ends at the first of these (`qwen3_coder_calls._VALUE_ENDS`), so free text must hold none.
_XML_VALUE_ENDS = ("</parameter>", "<parameter=", "</function>", "</tool_call>")


def qwen3_coder_call_grammar(tools: Sequence[dict[str, Any]], name: str | None) -> str:
    """The grammar for what follows the pre-fill of a forced Qwen3-Coder call:

    - named function (pre-fill `<tool_call>\\n<function=f>\\n`): `PARAMS(f) "</function>"`;
    - `required` with several functions (pre-fill `<tool_call>\\n<function=`): one of `f>\\n PARAMS(f)`
      for each function `f`, then `"</function>"`.

    `PARAMS(f)` is one `<parameter=p>\\nVALUE\\n</parameter>\\n` per property, in the schema's order,
    the required ones always; a function whose schema lists no properties takes any parameters. A
    string's VALUE is free text (any text without the tags that would end it, or one of its `enum`);
    any other type's is JSON under the property's schema (free text when that cannot be enforced).
    As with hermes, `</tool_call>` is left out: the parser takes a call complete at `</function>`."""
    functions = [t["function"] for t in tools]
    grammars = [_text_grammar("text-")]
    if name is not None:
        function = next(f for f in functions if f["name"] == name)
        return _join(f'root ::= {_xml_parameters(function, "f0-", grammars)} "</function>"', grammars)
    alternatives = []
    for i, function in enumerate(functions):
        head = _gbnf_literal(function["name"] + ">\n")
        alternatives.append(f"{head} {_xml_parameters(function, f'f{i}-', grammars)}")
    return _join(f'root ::= ( {" | ".join(alternatives)} ) "</function>"', grammars)


def _xml_parameters(function: dict[str, Any], prefix: str, grammars: list[str]) -> str:
    """The parameters of `function` as a GBNF expression; the rules it needs are added to `grammars`."""
    schema = function.get("parameters") or {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        return '( "<parameter=" [^<>\\n]+ ">\\n" text-t0 "\\n</parameter>\\n" )*'
    required = set(schema.get("required") or ())
    parts = []
    for i, (key, sub) in enumerate(properties.items()):
        head = _gbnf_literal(f"<parameter={key}>\n")
        element = f'{head} {_xml_value(sub, f"{prefix}p{i}-", grammars)} "\\n</parameter>\\n"'
        parts.append(element if key in required else f"( {element} )?")
    return "( " + " ".join(parts) + " )"


def _xml_value(schema: Any, prefix: str, grammars: list[str]) -> str:
    types = schema_types(schema)  # as the parser reads the same schema
    if types <= {"string"}:
        literals = []
        if isinstance(schema, dict):
            literals = [*schema.get("enum", ()), *([schema["const"]] if "const" in schema else [])]
        if literals and all(isinstance(v, str) for v in literals):
            return "( " + " | ".join(_gbnf_literal(v) for v in literals) + " )"
        return "text-t0"
    try:
        grammars.append(_prefixed(schema_to_grammar(schema), prefix))
    except InvalidRequest as exc:
        log.info("a tool parameter is constrained to free text (%s)", exc.message)
        return "text-t0"
    return f"{prefix}root"


def _text_grammar(prefix: str) -> str:
    """Any text that holds none of `_XML_VALUE_ENDS`: an automaton whose states are the tags' prefixes
    matched so far (the longest one the text ends with), one rule per state; a character that would
    complete a tag has no way forward. The text may end in any state."""
    states = sorted({tag[:n] for tag in _XML_VALUE_ENDS for n in range(len(tag))}, key=lambda s: (len(s), s))
    number = {state: i for i, state in enumerate(states)}
    alphabet = sorted({c for tag in _XML_VALUE_ENDS for c in tag})
    rules = []
    for state in states:
        targets: dict[str, list[str]] = {}
        for c in alphabet:
            text = state + c
            if any(text.endswith(tag) for tag in _XML_VALUE_ENDS):
                continue
            after = next(text[k:] for k in range(len(text) + 1) if text[k:] in number)
            targets.setdefault(after, []).append(c)
        # Characters outside the tags' alphabet lead back to the start, as do the tag characters sent there.
        elsewhere = [c for c in alphabet if c not in targets.get("", [])]
        alternatives = [f"[^{''.join(_class_char(c) for c in elsewhere)}] {prefix}t0"]
        for after, chars in targets.items():
            if after:
                members = "".join(_class_char(c) for c in chars)
                alternatives.append(f"[{members}] {prefix}t{number[after]}")
        rules.append(f"{prefix}t{number[state]} ::= ( {' | '.join(alternatives)} )?")
    return "\n".join(rules)


def _class_char(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c
