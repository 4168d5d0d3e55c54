"""Structured outputs on the real embedded model: grammar-constrained sampling in the llama.cpp engine,
and the JSON Schema → GBNF conversion checked against llama.cpp's own grammar engine."""

from __future__ import annotations

import asyncio
import ctypes
import json

import llama_cpp as C
import pytest

from llmhost.conversation.structured import (
    grammar_for_response_format,
    int_range_gbnf,
    json_object_grammar,
    schema_to_grammar,
)
from llmhost.errors import InvalidRequest
from llmhost.types import FinishReason, SamplingParams


def chat(question: str) -> str:
    # SmolLM2's template is ChatML; spelled out so these tests need no template machinery.
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )


async def run(engine, prompt: str, params: SamplingParams) -> tuple[str, list[int], object]:
    text, tokens, last = "", [], None
    async for delta in engine.generate(engine.tokenize(prompt), params):
        text += delta.text
        tokens += delta.token_ids
        last = delta
    return text, tokens, last


JSON_PROMPTS = [
    "Give me a JSON object with your name and age.",
    "Reply in JSON: what is the capital of France?",
    "Describe a dog in JSON with keys name, breed and age.",
    "Return a JSON object with the keys city and country for Paris.",
    "Write a JSON object for a book with title and author.",
]

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "colour": {"enum": ["red", "green", "blue"]},
        "score": {"type": "integer", "minimum": -5, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "colour", "score"],
    "additionalProperties": False,
}


def assert_person(doc: object) -> None:
    """What a JSON Schema validator would check for PERSON (jsonschema is not a dependency)."""
    assert isinstance(doc, dict)
    assert {"name", "age", "colour", "score"} <= doc.keys() <= set(PERSON["properties"])
    assert isinstance(doc["name"], str) and len(doc["name"]) <= 24
    assert type(doc["age"]) is int and 18 <= doc["age"] <= 99
    assert doc["colour"] in ("red", "green", "blue")
    assert type(doc["score"]) is int and -5 <= doc["score"] <= 5
    tags = doc.get("tags", [])
    assert (
        isinstance(tags, list) and len(tags) <= 3 and all(isinstance(t, str) and len(t) <= 12 for t in tags)
    )


@pytest.fixture
def engine(reproducible_engine):
    """This module runs without prefix caching: batched and solo answers compare bit for bit (with the
    cache they may differ at near-ties: tests/greedy.py) and a seeded sample is the same whatever test
    ran first."""
    return reproducible_engine


async def test_json_object_output_parses_at_temperature(engine):
    grammar = json_object_grammar()
    jobs = [
        (q, SamplingParams(max_tokens=200, temperature=0.8, seed=seed, grammar=grammar))
        for seed, q in enumerate(JSON_PROMPTS)
    ]
    results = await asyncio.gather(*(run(engine, chat(q), p) for q, p in jobs))
    for (question, _), (text, _, last) in zip(jobs, results, strict=True):
        assert last.finish_reason == FinishReason.STOP, (question, text)
        assert isinstance(json.loads(text), dict), (question, text)


async def test_json_schema_is_honoured(engine):
    grammar = schema_to_grammar(PERSON)
    jobs = [
        (q, SamplingParams(max_tokens=160, temperature=t, seed=seed, grammar=grammar))
        for q, t, seed in (
            ("Make up a person.", 0.0, None),
            ("Who are you?", 1.0, 7),
            ("Describe a very old man who loves the sea.", 1.5, 8),  # high temperature: wild, still valid
        )
    ]
    results = await asyncio.gather(*(run(engine, chat(q), p) for q, p in jobs))
    for (question, _), (text, _, last) in zip(jobs, results, strict=True):
        assert last.finish_reason == FinishReason.STOP, (question, text)
        assert_person(json.loads(text))


async def test_constrained_and_free_sequences_do_not_crosstalk(engine):
    """A constrained and an unconstrained sequence decoded together give what each gives alone."""
    free = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    constrained = SamplingParams(max_tokens=80, temperature=0.0, grammar=schema_to_grammar(PERSON))
    free_prompt, constrained_prompt = "The capital of France is", chat("Make up a person.")
    free_solo = await run(engine, free_prompt, free)
    constrained_solo = await run(engine, constrained_prompt, constrained)
    together = await asyncio.gather(
        run(engine, free_prompt, free),
        run(engine, constrained_prompt, constrained),
        run(
            engine,
            chat("Describe a cat as JSON."),
            SamplingParams(max_tokens=40, grammar=json_object_grammar()),
        ),
    )
    assert together[0][1] == free_solo[1], (free_solo[0], together[0][0])
    assert together[1][1] == constrained_solo[1], (constrained_solo[0], together[1][0])
    assert_person(json.loads(together[1][0]))
    assert not free_solo[0].lstrip().startswith("{")  # the free one really was free


async def test_a_hand_written_grammar_is_followed(engine):
    grammar = 'root ::= "The answer is " ("yes" | "no") "."'
    text, tokens, last = await run(
        engine, chat("Is the sky blue?"), SamplingParams(temperature=0.0, grammar=grammar)
    )
    assert text in ("The answer is yes.", "The answer is no.")
    assert last.finish_reason == FinishReason.STOP


async def test_invalid_grammar_is_refused_before_queueing(engine):
    prompt = engine.tokenize("Hello")
    for bad in ("root ::= undefined-rule", 'root ::= root "a"', "root ::= [a-"):
        with pytest.raises(InvalidRequest) as err:
            engine.generate(prompt, SamplingParams(max_tokens=4, grammar=bad))  # raises before iterating
        assert err.value.param == "grammar"
    text, _, _ = await run(
        engine, "Hello", SamplingParams(max_tokens=2, temperature=0.0)
    )  # engine still fine
    assert text


def test_grammar_params_are_validated():
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(grammar="  ")
    assert err.value.param == "grammar"
    with pytest.raises(InvalidRequest) as err:
        SamplingParams(grammar=json_object_grammar(), ignore_eos=True)
    assert err.value.param == "ignore_eos"


# -- the conversion, checked against llama.cpp's grammar engine ----------------------------------------


class GrammarProbe:
    """Feeds text to a llama.cpp grammar one character token at a time; says whether it is a full match."""

    def __init__(self, model, grammar: str) -> None:
        self._model = model
        self._grammar = grammar

    def matches(self, text: str) -> bool:
        smpl = C.llama_sampler_init_grammar(self._model.vocab, self._grammar.encode(), b"root")
        assert smpl, self._grammar
        try:
            for ch in text:
                (token,) = self._model.tokenize(ch, add_special=False, parse_special=False)
                if not self._allows(smpl, token):
                    return False
                C.llama_sampler_accept(smpl, token)
            return self._allows(smpl, self._model.eos_token_id)  # end allowed only when complete
        finally:
            C.llama_sampler_free(smpl)

    @staticmethod
    def _allows(smpl, token: int) -> bool:
        one = (C.llama_token_data * 1)()
        one[0].id, one[0].logit = token, 0.0
        arr = C.llama_token_data_array(ctypes.cast(one, C.llama_token_data_p), 1, -1, False)
        C.llama_sampler_apply(smpl, ctypes.byref(arr))
        return one[0].logit != float("-inf")


@pytest.fixture(scope="module")
def vocab_model(model_path):
    from llmhost.engines.llamacpp.backend import LlamaModel

    model = LlamaModel(str(model_path))
    yield model
    model.close()


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(0, 0), (18, 99), (-5, 5), (-120, -7), (7, 1234), (100, 130), (None, -3), (95, None), (None, 12)],
)
def test_integer_ranges_match_exactly(vocab_model, lo, hi):
    probe = GrammarProbe(vocab_model, f"root ::= {int_range_gbnf(lo, hi)}")
    edges = {b + d for b in (lo, hi) if b is not None for d in (-1, 0, 1)}
    for n in sorted(set(range(-130, 131)) | edges | {999, 1000, 1234, 1235, 9999, -9999}):
        expected = (lo is None or n >= lo) and (hi is None or n <= hi)
        assert probe.matches(str(n)) == expected, (lo, hi, n)
    assert not probe.matches("007")  # no leading zeros
    assert not probe.matches("-0")
    assert probe.matches(str(10**15)) == (hi is None)


def test_schema_grammar_accepts_valid_and_rejects_invalid(vocab_model):
    probe = GrammarProbe(vocab_model, schema_to_grammar(PERSON))
    assert probe.matches('{"name": "Ann", "age": 30, "colour": "red", "score": -2}')
    assert probe.matches('{"name": "A\\"b", "age": 99, "colour": "blue", "score": 5, "tags": ["x"]}')
    assert not probe.matches('{"name": "Ann", "age": 17, "colour": "red", "score": 0}')  # below minimum
    assert not probe.matches('{"name": "Ann", "age": 30, "colour": "pink", "score": 0}')  # not in enum
    assert not probe.matches('{"name": "Ann", "age": 30, "colour": "red"}')  # required key missing
    assert not probe.matches('{"name": "A\nb", "age": 30, "colour": "red", "score": 0}')  # raw newline


def test_enum_values_with_backslashes_match_themselves(vocab_model):
    probe = GrammarProbe(vocab_model, schema_to_grammar({"enum": ["a\\b", 'q"t']}))
    assert probe.matches(json.dumps("a\\b"))
    assert probe.matches(json.dumps('q"t'))
    assert not probe.matches('"ab"')


def test_lengths_and_item_counts(vocab_model):
    probe = GrammarProbe(vocab_model, schema_to_grammar({"type": "string", "minLength": 2, "maxLength": 3}))
    assert [probe.matches(json.dumps("x" * n)) for n in range(5)] == [False, False, True, True, False]
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}
    probe = GrammarProbe(vocab_model, schema_to_grammar(schema))
    assert [probe.matches(json.dumps(list(range(n)))) for n in range(5)] == [False, True, True, True, False]
    # llama.cpp refuses deeply nested grammars, so long limits use its native {m,n} repetition.
    long = GrammarProbe(vocab_model, schema_to_grammar({"type": "string", "maxLength": 5000}))
    assert long.matches(json.dumps("y" * 60))


def test_number_bounds(vocab_model):
    probe = GrammarProbe(vocab_model, schema_to_grammar({"type": "number", "minimum": 0, "maximum": 10}))
    for good in ("0", "3.25", "9.999", "10", "10.00"):
        assert probe.matches(good), good
    for bad in ("-1", "10.5", "11", "-0.5"):
        assert not probe.matches(bad), bad


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "not": {}}}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wat"}}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}},
        {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 5, "maximum": 1}},
        },
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "number", "minimum": -1.5}}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": [1, 2]}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"anyOf": []}}},
        {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object", "properties": [1]}},
        },
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "maxLength": -1}}},
        {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 1e300}},
        },
        {"type": "json_schema"},
        {"type": "yaml"},
    ],
)
def test_unenforceable_formats_are_refused(response_format):
    with pytest.raises(InvalidRequest) as err:
        grammar_for_response_format(response_format)
    assert err.value.param == "response_format"


def test_text_and_json_object_formats():
    assert grammar_for_response_format(None) is None
    assert grammar_for_response_format({"type": "text"}) is None
    assert grammar_for_response_format({"type": "json_object"}) == json_object_grammar()
    with_defs = {
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Point"}, "b": {"type": ["integer", "null"], "minimum": 1}},
        "required": ["a"],
    }
    assert "root ::=" in schema_to_grammar(with_defs)  # pydantic-style $defs/$ref resolve
