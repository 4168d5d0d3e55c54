"""Tool-call parameter values typed by the function's JSON Schema, as vLLM's qwen3_coder parser types
them: a string parameter (or one the schema does not describe) keeps its text; any other is parsed as JSON
(booleans in any case, Python-style literals for objects and arrays) and stays the text when it does not
parse. Used by the Qwen3-Coder XML parser and by its grammar (the same schema, read the same way)."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any

_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}


def schema_types(schema: Any) -> frozenset[str]:
    """The JSON types a parameter's schema allows; empty when it does not say (then it is text)."""
    if not isinstance(schema, Mapping):
        return frozenset()
    kind = schema.get("type")
    if isinstance(kind, str):
        return frozenset({kind})
    if isinstance(kind, list):
        return frozenset(k for k in kind if isinstance(k, str))
    found: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or ():
            found |= schema_types(sub)
    if not found:
        literals = list(schema.get("enum") or ()) + ([schema["const"]] if "const" in schema else [])
        found = {_JSON_TYPES.get(type(v), "object" if isinstance(v, dict) else "array") for v in literals}
    if not found:
        found = {t for key, t in (("properties", "object"), ("items", "array")) if key in schema}
    return frozenset(found)


def convert_value(text: str, types: frozenset[str]) -> Any:
    """A parameter's text as the value its schema types allow (see the module docstring)."""
    if types <= {"string"}:
        return text
    value = _parse_literal(text.strip(), types)
    if value is _UNPARSED:
        return text
    if "string" in types and not _has_type(value, types):
        return text  # e.g. ["string", "null"] and the text "42": the string it wrote
    if isinstance(value, float) and value.is_integer() and "integer" in types and "number" not in types:
        return int(value)
    return value


_UNPARSED = object()


def _parse_literal(text: str, types: frozenset[str]) -> Any:
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        pass
    lowered = text.lower()
    if "boolean" in types and lowered in ("true", "false"):
        return lowered == "true"
    if types & {"object", "array"}:
        # Models sometimes write Python literals ({'a': 1}, True); literal_eval evaluates no code.
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return _UNPARSED
        if isinstance(value, dict | list):
            try:
                return json.loads(json.dumps(value, ensure_ascii=False))  # only JSON's types survive
            except (TypeError, ValueError):
                return _UNPARSED
    return _UNPARSED


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python's json reads them, JSON has none


def _has_type(value: Any, types: frozenset[str]) -> bool:
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return bool(types & {"integer", "number"})
    if isinstance(value, float):
        return "number" in types
    if isinstance(value, str):
        return "string" in types
    if value is None:
        return "null" in types
    return ("object" if isinstance(value, dict) else "array") in types
