"""Forced tool calls under a grammar: what follows the pre-fill must be a call the tools allow."""

from __future__ import annotations

from llmhost.conversation.tool_grammar import _prefixed, forced_call_grammar
from tests.engines.test_structured_outputs import GrammarProbe, vocab_model  # noqa: F401 (fixture)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
NO_PARAMETERS = {"type": "function", "function": {"name": "now"}}
# `not` cannot be enforced: the arguments fall back to any JSON object instead of failing the request.
EXOTIC = {"type": "function", "function": {"name": "odd", "parameters": {"not": {"type": "string"}}}}


def test_a_named_call_takes_exactly_its_schema(vocab_model):  # noqa: F811
    probe = GrammarProbe(vocab_model, forced_call_grammar([WEATHER, ADD], "get_weather"))
    assert probe.matches('{"city": "Paris", "unit": "c"}}')
    assert not probe.matches('{"city": "Paris"}}')  # a required key missing
    assert not probe.matches('{"city": "Paris", "unit": "kelvin"}}')  # not in the enum
    assert not probe.matches('{"a": 1, "b": 2}}')  # another function's arguments
    assert not probe.matches('{"city": "Paris", "unit": "c"}')  # the call's own closing brace


def test_required_picks_one_of_the_functions_with_its_arguments(vocab_model):  # noqa: F811
    probe = GrammarProbe(vocab_model, forced_call_grammar([WEATHER, ADD, NO_PARAMETERS, EXOTIC], None))
    assert probe.matches('add", "arguments": {"a": 1, "b": -2}}')
    assert probe.matches('get_weather", "arguments": {"city": "Oslo", "unit": "f"}}')
    assert probe.matches('now", "arguments": {}}')
    assert probe.matches('odd", "arguments": {"anything": [1, 2]}}')
    assert not probe.matches('add", "arguments": {"a": "one", "b": 2}}')
    assert not probe.matches('subtract", "arguments": {"a": 1, "b": 2}}')  # not a tool


def test_prefixing_renames_rules_but_not_literals_classes_or_counts():
    grammar = 'root ::= "root" [a-z]{2,3} item # a comment about root\nitem ::= "x\\"y" root?\n'
    assert _prefixed(grammar, "p-") == (
        'p-root ::= "root" [a-z]{2,3} p-item # a comment about root\np-item ::= "x\\"y" p-root?\n'
    )
