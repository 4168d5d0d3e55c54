"""Structured outputs: an OpenAI `response_format` turned into a GBNF grammar the engine samples under.

JSON Schema → GBNF uses llama-cpp-python's port of llama.cpp's converter (`llama_cpp.llama_grammar`,
imported on first use: the `llama_cpp` package loads its native library), with what that port lacks
filled in here: integer (and simple number) ranges, JSON-valid string characters, literal escaping,
and type lists that keep their other keywords. A schema keyword the grammar cannot enforce is refused
(400 naming `response_format`) rather than silently ignored, so output that matched the grammar is
valid under the schema.
`format` is the exception: JSON Schema treats it as an annotation, so unknown formats are plain strings.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from typing import Any

from llmhost.errors import InvalidRequest

PARAM = "response_format"

# Keywords the converter does not enforce. Refusing them keeps "schema-valid" a promise.
_UNSUPPORTED = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "multipleOf",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "patternProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "unevaluatedProperties",
        "unevaluatedItems",
        "minProperties",
        "maxProperties",
    }
)
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_MAX_DIGITS = 16  # as llama.cpp's own JSON grammar: longer integers are not generated
_SPACE = r'| " " | "\n" [ \t]{0,20}'
_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def grammar_for_response_format(response_format: Mapping[str, Any] | None) -> str | None:
    """The grammar a response_format asks for; None for free text.

    Raises InvalidRequest(param="response_format") for a format or schema that cannot be enforced.
    """
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return json_object_grammar()
    if kind != "json_schema":
        raise _invalid(f"unknown type {kind!r}")
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping):
        raise _invalid("json_schema needs a 'json_schema' object")
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise _invalid("json_schema 'name' must be a string")
    schema = spec.get("schema")
    if schema is None:
        return json_object_grammar()  # a name without a schema: any JSON object
    return schema_to_grammar(schema)


def json_object_grammar() -> str:
    """Any JSON object: llama.cpp's JSON grammar (strings exclude raw control characters, and whitespace
    is bounded so a small model cannot run away in it)."""
    from llama_cpp import llama_grammar

    return llama_grammar.JSON_GBNF


def schema_to_grammar(schema: Any) -> str:
    """GBNF matching exactly the JSON documents valid under `schema` (the subset this module supports)."""
    if isinstance(schema, bool) or not isinstance(schema, Mapping):
        raise _invalid("schema must be a JSON Schema object")
    _refuse_unsupported(schema, "#")
    try:
        converter = _converter_class()(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        resolved = converter.resolve_refs(copy.deepcopy(dict(schema)), "input")
        converter.visit(resolved, "")
        return converter.format_grammar()
    except InvalidRequest:
        raise
    # The converter reports what it cannot handle with assert/ValueError; bad shapes raise the others.
    except (
        AssertionError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        RecursionError,
    ) as exc:
        raise _invalid(f"schema cannot be enforced: {exc}") from None


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(f"response_format: {message}", param=PARAM)


def _refuse_unsupported(node: Any, where: str) -> None:
    if isinstance(node, bool):
        return  # true/false schemas (e.g. additionalProperties: false)
    if not isinstance(node, Mapping):
        raise _invalid(f"schema at {where} must be an object")
    for key in node:
        if key in _UNSUPPORTED:
            raise _invalid(f"schema keyword '{key}' (at {where}) is not supported")
    if node.get("type") == "number" and any(k in node for k in _BOUNDS):
        _number_bounds(node)  # raises when the bounds are not ones the grammar can express
    for key in ("anyOf", "oneOf", "allOf", "type"):
        if node.get(key) == []:
            raise _invalid(f"schema '{key}' at {where} is an empty list: nothing would be valid")
    for key in ("properties", "$defs", "definitions"):
        if not isinstance(node.get(key, {}), Mapping):
            raise _invalid(f"schema '{key}' at {where} must be an object")
        for name, sub in (node.get(key) or {}).items():
            _refuse_unsupported(sub, f"{where}/{key}/{name}")
    for key in ("items", "additionalProperties"):
        if key in node and not isinstance(node[key], list):
            _refuse_unsupported(node[key], f"{where}/{key}")
    for key in ("items", "prefixItems", "anyOf", "oneOf", "allOf"):
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                _refuse_unsupported(sub, f"{where}/{key}/{i}")


@functools.cache
def _converter_class() -> type:
    from llama_cpp import llama_grammar as lg

    class _Converter(lg.SchemaConverter):
        def visit(self, schema: dict, name: str) -> str:
            rule_name = name + "-" if name in lg.RESERVED_NAMES else name or "root"
            kind = schema.get("type")
            if isinstance(kind, list) and not any(
                k in schema for k in ("$ref", "oneOf", "anyOf", "const", "enum")
            ):
                # The port keeps only the type of each alternative; keep the rest of the schema too.
                alternatives = [{**schema, "type": t} for t in kind]
                return self._add_rule(rule_name, self._generate_union_rule(name, alternatives))
            is_literal = "enum" in schema or "const" in schema
            if kind in ("integer", "number") and any(k in schema for k in _BOUNDS) and not is_literal:
                body = _int_rule(schema) if kind == "integer" else _number_rule(schema)
                return self._add_rule(rule_name, f"({body}) space")
            # Lengths: llama.cpp's native {m,n} repetition, not the port's nested expansion, which
            # llama.cpp refuses to parse beyond about a thousand levels (maxLength: 5000 is common).
            plain = (
                not any(k in schema for k in ("pattern", "format", "$ref", "anyOf", "oneOf"))
                and not is_literal
            )
            if kind == "string" and plain and ("minLength" in schema or "maxLength" in schema):
                lo, hi = _length_bounds(schema, "minLength", "maxLength")
                char = self._add_primitive("char", lg.PRIMITIVE_RULES["char"])
                return self._add_rule(rule_name, f'"\\"" {_repeat(char, lo, hi)} "\\"" space')
            items = schema.get("items")
            if kind == "array" and plain and isinstance(items, dict) and "prefixItems" not in schema:
                lo, hi = _length_bounds(schema, "minItems", "maxItems")
                item = self.visit(items, f"{name}{'-' if name else ''}item")
                more = _repeat(f'"," space {item}', max(lo - 1, 0), None if hi is None else hi - 1)
                body = "" if hi == 0 else f"{item} {more}"
                body = f"({body})?" if lo == 0 and body else body
                return self._add_rule(rule_name, f'"[" space {body} "]" space')
            return super().visit(schema, name)

        def format_grammar(self) -> str:
            # The port allows one space between tokens; models write pretty-printed JSON, and forcing
            # them off it costs quality and a full-vocabulary mask on most structural tokens. Newlines
            # and indentation are bounded (as in llama.cpp's JSON grammar) so they cannot run away.
            self._rules["space"] = _SPACE
            # The port's string characters include raw control characters, which JSON forbids.
            for rule_name, body in self._rules.items():
                if body == lg.PRIMITIVE_RULES["char"].content:
                    self._rules[rule_name] = _CHAR
            return super().format_grammar()

        def _format_literal(self, literal: str) -> str:
            # The port leaves backslashes unescaped, so an enum value holding one would not match itself.
            escaped = (
                literal.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
            )
            return f'"{escaped}"'

    return _Converter


def _length_bounds(schema: Mapping[str, Any], min_key: str, max_key: str) -> tuple[int, int | None]:
    lo, hi = schema.get(min_key, 0), schema.get(max_key)
    for key, value in ((min_key, lo), (max_key, hi)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise _invalid(f"schema '{key}' must be a whole number >= 0")
    if hi is not None and lo > hi:
        raise _invalid(f"schema '{min_key}' {lo} is above '{max_key}' {hi}")
    return lo, hi


def _repeat(item: str, lo: int, hi: int | None) -> str:
    """`item` lo..hi times (hi None: no upper bound), in GBNF."""
    if hi == 0:
        return ""
    if hi is None:
        return f"({item}){{{lo},}}"
    return f"({item}){{{lo},{hi}}}"


def _int_rule(schema: Mapping[str, Any]) -> str:
    lo, hi = _int_bounds(schema)
    if lo is not None and hi is not None and lo > hi:
        raise _invalid(f"schema integer range [{lo}, {hi}] is empty")
    largest = 10**_MAX_DIGITS - 1
    if (lo is not None and lo > largest) or (hi is not None and hi < -largest):
        raise _invalid(f"schema integer bounds beyond {_MAX_DIGITS} digits are not supported")
    return int_range_gbnf(lo, hi)


def _int_bounds(schema: Mapping[str, Any]) -> tuple[int | None, int | None]:
    lo = hi = None
    for key, value in schema.items():
        if key not in _BOUNDS or (isinstance(value, bool) and key.startswith("exclusive")):
            continue  # draft-4 boolean exclusive flags are read with their minimum/maximum below
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _invalid(f"schema '{key}' must be a number")
        if key == "minimum":
            bound = math.ceil(value) + (
                1 if schema.get("exclusiveMinimum") is True and value == int(value) else 0
            )
            lo = bound if lo is None else max(lo, bound)
        elif key == "exclusiveMinimum":
            bound = math.floor(value) + 1
            lo = bound if lo is None else max(lo, bound)
        elif key == "maximum":
            bound = math.floor(value) - (
                1 if schema.get("exclusiveMaximum") is True and value == int(value) else 0
            )
            hi = bound if hi is None else min(hi, bound)
        else:
            bound = math.ceil(value) - 1
            hi = bound if hi is None else min(hi, bound)
    return lo, hi


def _number_bounds(schema: Mapping[str, Any]) -> tuple[int, int | None]:
    """Bounds of a 'number' the grammar can express: inclusive, whole, and not below zero."""
    if any(k in schema for k in ("exclusiveMinimum", "exclusiveMaximum")):
        raise _invalid("exclusive bounds on 'number' are not supported")
    lo, hi = schema.get("minimum", 0), schema.get("maximum")
    for value in (lo, hi):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise _invalid("'number' bounds must be whole numbers >= 0 (use 'integer' otherwise)")
        if value is not None and value != int(value):
            raise _invalid("'number' bounds must be whole numbers")
    lo_i, hi_i = int(lo), None if hi is None else int(hi)
    if hi_i is not None and lo_i > hi_i:
        raise _invalid(f"schema number range [{lo_i}, {hi_i}] is empty")
    return lo_i, hi_i


def _number_rule(schema: Mapping[str, Any]) -> str:
    lo, hi = _number_bounds(schema)
    fraction = '("." [0-9]{1,15})?'
    if hi is None:
        return f"({nat_range_gbnf(lo, None)}) {fraction}"
    whole = f'"{hi}" ("." "0"{{1,15}})?'  # hi itself, with any number of zero decimals
    if lo == hi:
        return whole
    return f"({nat_range_gbnf(lo, hi - 1)}) {fraction} | {whole}"


def int_range_gbnf(lo: int | None, hi: int | None) -> str:
    """A GBNF expression for the decimal integers in [lo, hi] (None: unbounded, up to 16 digits)."""
    alternatives = []
    if lo is None or lo < 0:
        neg_lo = 1 if hi is None or hi >= 0 else -hi
        alternatives.append(f'"-" ({nat_range_gbnf(neg_lo, None if lo is None else -lo)})')
    if hi is None or hi >= 0:
        alternatives.append(nat_range_gbnf(max(lo or 0, 0), hi))
    return " | ".join(f"({a})" for a in alternatives)


def nat_range_gbnf(lo: int, hi: int | None) -> str:
    """A GBNF expression for the integers in [lo, hi], lo >= 0, without leading zeros."""
    num_lo = len(str(lo))
    num_hi = _MAX_DIGITS if hi is None else len(str(hi))
    alternatives = []
    for n in range(num_lo, min(num_hi, _MAX_DIGITS) + 1):
        first = lo if n == num_lo else 10 ** (n - 1)
        last = hi if hi is not None and n == num_hi else 10**n - 1
        if first > last:
            continue
        if hi is None and n > num_lo:  # every longer length is full: one repetition covers them all
            alternatives.append(f"[1-9] [0-9]{{{n - 1},{_MAX_DIGITS - 1}}}")
            break
        alternatives.append(_same_length(str(first), str(last)))
    return " | ".join(f"({a})" for a in alternatives)


def _same_length(lo: str, hi: str) -> str:
    """Digit strings of one length between lo and hi (inclusive), as GBNF."""
    if lo == hi:
        return f'"{lo}"'
    common = 0
    while lo[common] == hi[common]:
        common += 1
    head = f'"{lo[:common]}" ' if common else ""
    d_lo, d_hi, rest_lo, rest_hi = int(lo[common]), int(hi[common]), lo[common + 1 :], hi[common + 1 :]
    width = len(rest_lo)
    if width == 0:
        return f"{head}[{d_lo}-{d_hi}]"
    alternatives = []
    full_from, full_to = d_lo, d_hi  # leading digits that any `width` digits may follow
    if rest_lo != "0" * width:
        alternatives.append(f'"{d_lo}" ({_same_length(rest_lo, "9" * width)})')
        full_from += 1
    if rest_hi != "9" * width:
        alternatives.append(f'"{d_hi}" ({_same_length("0" * width, rest_hi)})')
        full_to -= 1
    if full_from <= full_to:
        alternatives.append(f"[{full_from}-{full_to}] [0-9]{{{width}}}")
    return head + "(" + " | ".join(alternatives) + ")"
