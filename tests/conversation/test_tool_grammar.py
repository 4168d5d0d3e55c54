"""Forced tool calls under a grammar: what follows the pre-fill must be a call the tools allow."""

from __future__ import annotations

from llmhost.conversation.tool_grammar import _prefixed, forced_call_grammar, qwen3_coder_call_grammar
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


# -- Qwen3-Coder's XML calls ---------------------------------------------------------------------------
WRITE = {
    "type": "function",
    "function": {
        "name": "write_file",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "content": {"type": "string"},
                "mode": {"type": "integer"},
            },
            "required": ["path", "content"],
        },
    },
}


def xml(*params: tuple[str, str]) -> str:
    return "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params) + "</function>"


def test_a_named_xml_call_takes_its_parameters_typed_in_order(vocab_model):  # noqa: F811
    probe = GrammarProbe(vocab_model, qwen3_coder_call_grammar([WEATHER, ADD], "add"))
    assert probe.matches(xml(("a", "1"), ("b", "-2")))
    assert not probe.matches(xml(("a", "one"), ("b", "2")))  # an integer's value is JSON
    assert not probe.matches(xml(("a", "1")))  # a required parameter missing
    assert not probe.matches(xml(("b", "2"), ("a", "1")))  # the schema's order
    probe = GrammarProbe(vocab_model, qwen3_coder_call_grammar([WEATHER], "get_weather"))
    assert probe.matches(xml(("city", "Paris"), ("unit", "c")))
    assert not probe.matches(xml(("city", "Paris"), ("unit", "kelvin")))  # not in the enum


def test_free_text_values_hold_anything_but_the_tags_that_would_end_them(vocab_model):  # noqa: F811
    probe = GrammarProbe(vocab_model, qwen3_coder_call_grammar([WRITE], "write_file"))
    code = 'if a < b and c </ d:\n    print("<para>", x</functio)\n'
    assert probe.matches(xml(("path", "a.py"), ("content", code)))
    assert probe.matches(xml(("path", "a.py"), ("content", code), ("mode", "420")))  # the optional one
    assert probe.matches(xml(("path", "a.py"), ("content", "")))
    for tag in ("</parameter>", "<parameter=", "</function>", "</tool_call>"):
        assert not probe.matches(xml(("path", "a.py"), ("content", f"x {tag} y"))), tag
    assert not probe.matches(xml(("path", "a.py"), ("content", "<</parameter>")))


def test_required_xml_picks_one_function_and_untyped_ones_take_any_parameters(vocab_model):  # noqa: F811
    grammar = qwen3_coder_call_grammar([WEATHER, ADD, NO_PARAMETERS, EXOTIC], None)
    probe = GrammarProbe(vocab_model, grammar)
    assert probe.matches("add>\n" + xml(("a", "1"), ("b", "2")))
    assert probe.matches("now>\n" + xml())
    assert probe.matches("now>\n" + xml(("anything", "goes")))
    assert not probe.matches("subtract>\n" + xml(("a", "1"), ("b", "2")))
