"""Structured outputs end to end: `response_format` through the official openai SDK, real server."""

from __future__ import annotations

import json
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.e2e

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "colour": {"type": "string", "enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "colour"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Make up a person."}]


def json_schema(schema: dict, name: str = "person") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def assert_person(doc: object) -> None:
    assert isinstance(doc, dict) and set(doc) == {"name", "age", "colour"}
    assert isinstance(doc["name"], str) and len(doc["name"]) <= 24
    assert type(doc["age"]) is int and 18 <= doc["age"] <= 99
    assert doc["colour"] in ("red", "green", "blue")


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=240)


def test_json_schema_content_is_schema_valid(client):
    r = client.chat.completions.create(
        model="smol", messages=ASK, max_tokens=120, temperature=0.7, seed=3, n=2,
        response_format=json_schema(PERSON_SCHEMA),
    )  # fmt: skip
    for choice in r.choices:
        assert choice.finish_reason == "stop", choice.message.content
        assert_person(json.loads(choice.message.content))


def test_json_object_streams_parsable_json(client):
    stream = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Give me a JSON object with your name and age."}],
        max_tokens=120, temperature=0, stream=True, response_format={"type": "json_object"},
    )  # fmt: skip
    text, finish = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    assert isinstance(json.loads(text), dict)


class Pet(BaseModel):
    name: str = Field(max_length=20)
    kind: Literal["cat", "dog", "fish"]
    legs: int = Field(ge=0, le=4)


def test_sdk_parse_with_a_pydantic_model(client):
    """The SDK's own helper: it turns the model into a strict json_schema and parses the reply with it."""
    r = client.chat.completions.parse(
        model="smol", messages=[{"role": "user", "content": "Describe a pet."}], max_tokens=80,
        temperature=0, response_format=Pet,
    )  # fmt: skip
    pet = r.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.kind in ("cat", "dog", "fish") and 0 <= pet.legs <= 4


@pytest.mark.parametrize(
    "response_format",
    [
        json_schema({"type": "object", "properties": {"x": {"not": {"type": "string"}}}}),
        json_schema({"type": "string", "pattern": "unanchored"}),
        json_schema({"type": "integer", "minimum": 10, "maximum": 1}),
        {"type": "json_schema"},
    ],
)
def test_unconvertible_schema_is_400_naming_response_format(client, response_format):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smol", messages=ASK, max_tokens=8, response_format=response_format
        )
    assert err.value.body["param"] == "response_format"
    assert err.value.body["message"].startswith("response_format")


def test_ignore_eos_with_a_response_format_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smol", messages=ASK, max_tokens=8, response_format={"type": "json_object"},
            extra_body={"ignore_eos": True},
        )  # fmt: skip
    assert err.value.body["param"] == "ignore_eos"


def test_text_format_is_free_text(client):
    r = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0,
        response_format={"type": "text"},
    )  # fmt: skip
    assert r.choices[0].message.content
