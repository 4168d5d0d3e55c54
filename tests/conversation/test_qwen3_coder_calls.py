"""Qwen3-Coder (XML) tool calls: parsing whole and streamed at every split, values typed by the schema,
malformed output kept as content, the format chosen from the chat template, and the prompt side."""

import copy
import json
from pathlib import Path

import pytest

from llmhost.conversation.qwen3_coder_calls import Qwen3CoderParser, parse_qwen3_coder_calls
from llmhost.conversation.schema_values import convert_value, schema_types
from llmhost.conversation.template import ChatTemplate
from llmhost.conversation.tool_formats import HERMES, QWEN3_CODER
from llmhost.conversation.tool_prompt import qwen3_coder_forced_prefix, qwen3_coder_system_text
from tests.conversation.test_template import SMOLLM2
from tests.conversation.test_toolcalls import ROUND_TRIP, stream

FIXTURES = Path(__file__).parent.parent / "fixtures"
QWEN3_CODER_TEMPLATE = (FIXTURES / "qwen3_coder_chat_template.jinja").read_text()
QWEN3_TEMPLATE = (FIXTURES / "qwen3_chat_template.jinja").read_text()


def tool(name: str, **properties: dict) -> dict:
    return {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": properties}},
    }


WRITE = tool(
    "write_file",
    path={"type": "string"},
    content={"type": "string"},
    mode={"type": "integer"},
    overwrite={"type": "boolean"},
    options={"type": "object"},
    lines={"type": "array", "items": {"type": "integer"}},
    ratio={"type": "number"},
    note={"type": ["string", "null"]},
)
WEATHER = tool("get_weather", city={"type": "string"}, days={"type": "integer"})
TOOLS = [WRITE, WEATHER, tool("now")]

CODE = 'def f(x):\n    return {"a": x}  # <b> & "quotes"\n\n'
WRITE_CALL = (
    "<tool_call>\n<function=write_file>\n"
    "<parameter=path>\nsrc/a.py\n</parameter>\n"
    f"<parameter=content>\n{CODE}\n</parameter>\n"
    "<parameter=mode>\n420\n</parameter>\n"
    "<parameter=overwrite>\ntrue\n</parameter>\n"
    '<parameter=options>\n{"encoding": "utf-8", "flags": [1, 2]}\n</parameter>\n'
    "<parameter=lines>\n[1, 2, 3]\n</parameter>\n"
    "<parameter=ratio>\n0.5\n</parameter>\n"
    "</function>\n</tool_call>"
)
WRITE_ARGS = {
    "path": "src/a.py",
    "content": CODE,
    "mode": 420,
    "overwrite": True,
    "options": {"encoding": "utf-8", "flags": [1, 2]},
    "lines": [1, 2, 3],
    "ratio": 0.5,
}
WEATHER_CALL = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
)
SAMPLE = "Let me write it.\n\n" + WRITE_CALL + "\n" + WEATHER_CALL


def xml_stream(text: str, cuts: list[int]) -> tuple[str, dict[int, dict], Qwen3CoderParser]:
    parser = Qwen3CoderParser(TOOLS)
    return (*stream(text, cuts, parser), parser)


def test_a_call_with_every_type_of_value():
    content, calls = parse_qwen3_coder_calls(SAMPLE, TOOLS)
    assert content == "Let me write it."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("write_file", WRITE_ARGS),
        ("get_weather", {"city": "Paris"}),
    ]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id


def test_only_calls_have_no_content():
    content, calls = parse_qwen3_coder_calls(WEATHER_CALL + "\n", TOOLS)
    assert content is None and [c.name for c in calls] == ["get_weather"]


@pytest.mark.parametrize("cut", range(len(SAMPLE) + 1))
def test_streaming_split_at_every_point_matches_the_whole_parse(cut):
    whole_content, whole_calls = parse_qwen3_coder_calls(SAMPLE, TOOLS)
    content, calls, parser = xml_stream(SAMPLE, [cut])
    assert content == whole_content
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.name, c.arguments) for c in whole_calls
    ]
    assert parser.content() == whole_content


def test_streaming_one_character_at_a_time_sends_strings_as_they_are_written():
    content, calls, _ = xml_stream(SAMPLE, list(range(1, len(SAMPLE))))
    assert content == "Let me write it."
    assert json.loads(calls[0]["arguments"]) == WRITE_ARGS
    assert calls[0]["pieces"] > len(CODE)  # the code went out piece by piece, not at the end
    assert json.loads(calls[1]["arguments"]) == {"city": "Paris"}


def test_a_partial_tag_is_held_and_never_leaks_into_content():
    parser = Qwen3CoderParser(TOOLS)
    assert parser.feed("Sure <tool").content == "Sure"
    out = parser.feed("_call>\n<func")
    assert out.content == "" and out.tool_calls == []
    out = parser.feed("tion=now>\n</function>")
    assert [d.name for d in out.tool_calls if d.name] == ["now"]
    assert "".join(d.arguments for d in out.tool_calls) == "{}"


def test_several_functions_in_one_block_and_a_bare_function_without_tool_call_tags():
    text = (
        "<tool_call>\n<function=now>\n</function>\n<function=get_weather>\n<parameter=city>\nOslo\n"
        "</parameter>\n</function>\n</tool_call>\n<function=now>\n</function>"
    )
    content, calls = parse_qwen3_coder_calls(text, TOOLS)
    assert content is None
    assert [(c.name, c.arguments) for c in calls] == [
        ("now", "{}"),
        ("get_weather", '{"city": "Oslo"}'),
        ("now", "{}"),
    ]


def test_missing_end_tags_are_tolerated():
    # No </parameter> twice, no </tool_call>.
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n<parameter=days>\n2\n</function>"
    content, calls = parse_qwen3_coder_calls(text, TOOLS)
    assert content is None and json.loads(calls[0].arguments) == {"city": "Rome", "days": 2}


def test_values_written_inline_and_with_extra_newlines():
    text = "<function=get_weather><parameter=city>Lima</parameter>"
    text += "<parameter=days>\n\n3\n\n</parameter></function>"
    _, [call] = parse_qwen3_coder_calls(text, TOOLS)
    assert json.loads(call.arguments) == {"city": "Lima", "days": 3}
    _, [call] = parse_qwen3_coder_calls(
        "<function=write_file><parameter=content>\n\nline\n\n</parameter></function>", TOOLS
    )
    assert json.loads(call.arguments) == {"content": "\nline\n"}  # only the format's newlines go


@pytest.mark.parametrize(
    "text",
    [
        "Use <tool_call> tags to call tools.",
        "<tool_call>\nnot a function\n</tool_call>",
        "<tool_call>\n<function=\nbroken>\n</function>\n</tool_call>",
        "<tool_call>\n<function=>\n</function>\n</tool_call>",
        "a <function=f and no closing angle bracket for a very long time" + "x" * 300,
        "<tool_call>\n<function=now",
    ],
)
def test_malformed_text_is_content_nothing_lost(text):
    content, calls = parse_qwen3_coder_calls(text, TOOLS)
    assert calls == [] and content == text
    for cut in range(len(text) + 1):
        streamed, calls_streamed, _ = xml_stream(text, [cut])
        assert streamed == text and calls_streamed == {}


def test_a_call_cut_before_its_end_is_invalid_and_its_text_is_content():
    cut = WEATHER_CALL[: WEATHER_CALL.index("Par") + 2]
    content, calls, parser = xml_stream("Checking.\n" + cut, [14])
    assert [c["name"] for c in calls.values()] == ["get_weather"]  # streamed before it broke
    assert parser.valid_calls() == [] and parser.content() == "Checking.\n" + cut


def test_a_valid_call_next_to_a_cut_one():
    content, calls = parse_qwen3_coder_calls(WEATHER_CALL + "\n<tool_call>\n<function=now>\n<para", TOOLS)
    assert [c.name for c in calls] == ["get_weather"]
    assert content == "<tool_call>\n<function=now>\n<para"  # the whitespace between calls goes


def test_a_hermes_json_body_is_read_too():
    content, calls = parse_qwen3_coder_calls(
        'ok\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>', TOOLS
    )
    assert content == "ok" and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"})
    ]


def test_text_between_parameters_is_skipped():
    text = "<function=get_weather>\nhmm\n<parameter=city>\nBern\n</parameter>\n<b>\n</function>"
    _, [call] = parse_qwen3_coder_calls(text, TOOLS)
    assert json.loads(call.arguments) == {"city": "Bern"}


@pytest.mark.parametrize(
    ("text", "schema", "expected"),
    [
        ("null", {"type": "string"}, "null"),  # a string stays a string (vLLM would give None)
        ("null", {"type": ["string", "null"]}, None),
        ("42", {"type": ["string", "null"]}, "42"),
        ("42", {"type": "integer"}, 42),
        ("42.0", {"type": "integer"}, 42),
        ("4.5", {"type": "number"}, 4.5),
        ("forty", {"type": "integer"}, "forty"),  # falls back to the text
        ("NaN", {"type": "number"}, "NaN"),  # not JSON
        ("True", {"type": "boolean"}, True),
        ("FALSE", {"type": "boolean"}, False),
        ("{'a': 1, 'b': [True, None]}", {"type": "object"}, {"a": 1, "b": [True, None]}),
        ("[1, 2", {"type": "array"}, "[1, 2"),
        ("{}", {"anyOf": [{"type": "object"}, {"type": "null"}]}, {}),
        ("b", {"enum": ["a", "b"]}, "b"),
        ("2", {"enum": [1, 2]}, 2),
        ("x", {}, "x"),
    ],
)
def test_values_follow_the_schema(text, schema, expected):
    assert convert_value(text, schema_types(schema)) == expected


def test_parameters_the_schema_does_not_know_are_strings():
    text = "<function=now>\n<parameter=when>\n12\n</parameter>\n</function>"
    _, [call] = parse_qwen3_coder_calls(text, TOOLS)
    assert call.arguments == '{"when": "12"}'
    _, [call] = parse_qwen3_coder_calls(text)  # no tools at all
    assert call.arguments == '{"when": "12"}'


# -- the format, from the chat template -----------------------------------------------------------
def test_auto_reads_the_format_from_the_template():
    assert ChatTemplate(QWEN3_CODER_TEMPLATE).tool_call_format is QWEN3_CODER
    assert ChatTemplate(QWEN3_TEMPLATE).tool_call_format is HERMES
    assert ChatTemplate(SMOLLM2).tool_call_format is HERMES  # ignores tools: llmhost's hermes prompt
    assert ChatTemplate(QWEN3_TEMPLATE, tool_call_parser="qwen3_coder").tool_call_format is QWEN3_CODER
    assert ChatTemplate(QWEN3_CODER_TEMPLATE, tool_call_parser="hermes").tool_call_format is HERMES


HISTORY = copy.deepcopy(ROUND_TRIP)  # the call's arguments as the OpenAI SDK sends them: a JSON string
HISTORY[1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Paris", "days": 2}'
HISTORY_CALL = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n"
    "</parameter>\n</function>\n</tool_call>"
)


def test_calls_sent_back_render_through_a_qwen3_coder_template():
    out = ChatTemplate(QWEN3_CODER_TEMPLATE).render(HISTORY, tools=TOOLS)
    assert "<|im_start|>assistant\n" + HISTORY_CALL + "<|im_end|>" in out
    assert '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>' in out
    assert "<name>write_file</name>" in out  # the template described the tools itself
    _, [call] = parse_qwen3_coder_calls(HISTORY_CALL, TOOLS)  # what it wrote reads back the same
    assert json.loads(call.arguments) == {"city": "Paris", "days": 2}


def test_a_template_that_ignores_tools_is_told_the_chosen_format():
    template = ChatTemplate(SMOLLM2, tool_call_parser="qwen3_coder")
    out = template.render(HISTORY, tools=TOOLS)
    assert out.startswith("<|im_start|>system\n" + qwen3_coder_system_text(TOOLS) + "<|im_end|>\n")
    assert "<|im_start|>assistant\n" + HISTORY_CALL + "<|im_end|>" in out
    assert '{"name": "get_weather", "arguments"' not in out.split("<|im_end|>", 1)[1]  # no hermes call


def test_forced_prefix_continues_into_a_parsable_call():
    _, calls = parse_qwen3_coder_calls(
        qwen3_coder_forced_prefix("get_weather") + "<parameter=city>\nOslo\n</parameter>\n</function>", TOOLS
    )
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Oslo"}')]
    _, calls = parse_qwen3_coder_calls(qwen3_coder_forced_prefix(None) + "now>\n</function>", TOOLS)
    assert [c.name for c in calls] == ["now"]
