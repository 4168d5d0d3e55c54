"""Hermes tool-call parsing: non-stream, streamed at every split, malformed output, and the prompt side
(tools rendered by the template, or injected for templates that ignore them)."""

import json
from pathlib import Path

import pytest

from llmhost.conversation.reasoning import ReasoningSplitter
from llmhost.conversation.template import ChatTemplate
from llmhost.conversation.tool_prompt import forced_call_prefix, tools_system_text
from llmhost.conversation.toolcalls import StreamingCallParser, ToolCallParser, parse_tool_calls
from tests.conversation.test_template import SMOLLM2

QWEN3 = (Path(__file__).parent.parent / "fixtures" / "qwen3_chat_template.jinja").read_text()

WEATHER = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
)
NESTED_ARGS = '{"filter": {"tags": ["a", "}", "{"], "deep": {"x": [1, 2, {"y": null}]}}, "q": "say \\"hi\\""}'
NESTED = f'<tool_call>\n{{"name": "search", "arguments": {NESTED_ARGS}}}\n</tool_call>'
EMPTY = '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'


def stream(
    text: str, cuts: list[int], parser: StreamingCallParser | None = None
) -> tuple[str, dict[int, dict]]:
    """Feed `text` cut at `cuts` to `parser` (a hermes one by default); the concatenated content and
    each call's name, id, arguments and number of argument pieces."""
    parser = parser or ToolCallParser()
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    content = ""
    calls: dict[int, dict] = {}
    for out in [parser.feed(p) for p in pieces] + [parser.finish()]:
        content += out.content
        for d in out.tool_calls:
            if d.name is not None:
                assert d.index not in calls, "a call starts once"
                assert d.arguments == "" or d.id is not None
                calls[d.index] = {"name": d.name, "id": d.id, "arguments": d.arguments, "pieces": 0}
            else:
                assert d.index in calls, "the name comes before the arguments"
                calls[d.index]["arguments"] += d.arguments
                calls[d.index]["pieces"] += 1
    return content, calls


def test_one_call():
    content, calls = parse_tool_calls(WEATHER)
    assert content is None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"})
    ]
    assert calls[0].id.startswith("call_")


def test_text_before_the_call_is_content():
    content, calls = parse_tool_calls("Let me look that up.\n\n" + WEATHER + "\n")
    assert content == "Let me look that up."
    assert [c.name for c in calls] == ["get_weather"]


def test_nested_and_empty_arguments_and_several_calls():
    content, calls = parse_tool_calls(NESTED + "\n" + EMPTY + "\n" + WEATHER)
    assert content is None
    assert [c.name for c in calls] == ["search", "now", "get_weather"]
    assert json.loads(calls[0].arguments) == json.loads(NESTED_ARGS)
    assert calls[1].arguments == "{}"
    assert len({c.id for c in calls}) == 3


def test_arguments_first_or_missing_or_as_a_string():
    _, calls = parse_tool_calls('<tool_call>\n{"arguments": {"a": 1}, "name": "f"}\n</tool_call>')
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("f", {"a": 1})]
    _, calls = parse_tool_calls('<tool_call>\n{"name": "f"}\n</tool_call>')
    assert [(c.name, c.arguments) for c in calls] == [("f", "{}")]
    _, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 2}"}</tool_call>')
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("f", {"a": 2})]


def test_no_call_is_plain_content_unchanged():
    for text in ["Hello!\n\n", "a < b and x <tool", "", "  spaced  "]:
        assert parse_tool_calls(text) == (text, [])


@pytest.mark.parametrize(
    "text",
    [
        "<tool_call>\nnot json at all\n</tool_call>",
        '<tool_call>\n{"name": 5, "arguments": {}}\n</tool_call>',
        '<tool_call>\n["get_weather"]\n</tool_call>',
        '<tool_call>\n{"name": "f", "arguments": {"a": tru}}\n</tool_call>',  # bad JSON after the name
        '<tool_call>\n{"name": "f", "arguments": {"a": 1\n</tool_call>',  # block ends inside arguments
        '<tool_call>\n{"name": "f", "arguments": {"a": 1',  # cut by max_tokens
        '<tool_call>\n{"name": "f", "arguments": {"a": 1}} trailing junk </tool_call>',
    ],
)
def test_malformed_call_falls_back_to_content_nothing_lost(text):
    content, calls = parse_tool_calls("Before. " + text)
    assert calls == []
    assert content == "Before. " + text


def test_a_valid_call_next_to_a_malformed_one():
    bad = "<tool_call>\nnope\n</tool_call>"
    content, calls = parse_tool_calls(bad + "\n" + WEATHER)
    assert content == bad and [c.name for c in calls] == ["get_weather"]


def test_complete_call_without_the_end_tag_counts():
    # e.g. `</tool_call>` was a stop string, or the model ended right after the JSON
    _, calls = parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n')
    assert [(c.name, c.arguments) for c in calls] == [("f", '{"a": 1}')]


CASES = [
    "Checking.\n" + WEATHER,
    NESTED + "\n" + EMPTY,
    "<tool_call>\nnot json\n</tool_call> after",
    '<tool_call>\n{"arguments": {"q": "x"}, "name": "late"}\n</tool_call>',
    "x <tool_call" + "> y",
    "plain answer with a < and </tool_call> in it\n",
]


@pytest.mark.parametrize("text", CASES)
def test_streaming_split_at_every_boundary_matches_non_stream(text):
    expected_content, expected_calls = parse_tool_calls(text)
    expected = [(c.name, c.arguments) for c in expected_calls]
    for cut in range(len(text) + 1):
        for cuts in ([cut], list(range(cut, len(text), 3))):  # one split, and 3-char deltas from it
            content, calls = stream(text, cuts)
            assert content == (expected_content or ""), cuts
            assert [(c["name"], c["arguments"]) for c in calls.values()] == expected, cuts


def test_streaming_one_char_at_a_time_sends_name_before_arguments_in_pieces():
    parser = ToolCallParser()
    deltas = []
    for ch in WEATHER:
        deltas += parser.feed(ch).tool_calls
    deltas += parser.finish().tool_calls
    assert deltas[0].name == "get_weather" and deltas[0].arguments == "" and deltas[0].id
    pieces = [d.arguments for d in deltas[1:]]
    assert len(pieces) > 5 and all(d.name is None for d in deltas[1:])
    assert json.loads("".join(pieces)) == {"city": "Paris", "unit": "celsius"}


def test_streaming_holds_a_partial_tag_and_never_leaks_it():
    parser = ToolCallParser()
    assert parser.feed("Sure <tool").content == "Sure"
    out = parser.feed('_call>\n{"name": "f", "arguments": {"a"')
    assert out.content == "" and out.tool_calls[0].name == "f"
    assert "".join(d.arguments for d in out.tool_calls) == '{"a"'


def test_streamed_call_that_breaks_is_invalid_and_the_block_is_content_non_stream():
    parser = ToolCallParser()
    parser.feed('<tool_call>\n{"name": "f", "arguments": {"a": tru}}\n</tool_call>')
    parser.finish()
    assert parser.valid_calls() == [] and parser.calls[0].is_valid is False


def test_tool_calls_after_the_thinking():
    text = "<think>\nI should call <tool_call> maybe.\n</think>\n\n" + WEATHER
    for cut in range(len(text) + 1):
        splitter = ReasoningSplitter("qwen3")
        parser = ToolCallParser()
        reasoning, names = "", []
        for piece in (text[:cut], text[cut:]):
            r, c = splitter.feed(piece)
            reasoning += r
            names += [d.name for d in parser.feed(c).tool_calls if d.name]
        r, c = splitter.finish()
        reasoning += r
        names += [d.name for d in parser.feed(c).tool_calls if d.name]
        names += [d.name for d in parser.finish().tool_calls if d.name]
        assert reasoning == "I should call <tool_call> maybe."
        assert names == ["get_weather"]


# -- the prompt side ---------------------------------------------------------------------------------
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},  # as the SDK sends
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
]


def test_smollm2_ignores_tools_so_they_are_injected():
    template = ChatTemplate(SMOLLM2)
    raw = ChatTemplate(SMOLLM2)._compiled  # the template alone, without llmhost's help
    plain = [{"role": "user", "content": "Hi"}]
    assert raw.render(messages=plain, tools=TOOLS) == raw.render(messages=plain)  # it ignores them
    assert template.renders_tools is False
    out = template.render(plain, tools=TOOLS)
    assert out.startswith("<|im_start|>system\n" + tools_system_text(TOOLS) + "<|im_end|>\n")
    assert '"name": "get_weather"' in out and out.endswith("<|im_start|>assistant\n")


def test_injected_tools_join_an_existing_system_message():
    out = ChatTemplate(SMOLLM2).render(
        [{"role": "system", "content": "Be brief."}, *ROUND_TRIP[:1]], tools=TOOLS
    )
    assert out.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert out.count("<|im_start|>system") == 1


def test_round_trip_renders_the_same_hermes_text_with_smollm2_as_with_qwen3():
    smol = ChatTemplate(SMOLLM2).render(ROUND_TRIP, tools=TOOLS)
    qwen = ChatTemplate(QWEN3).render(ROUND_TRIP, tools=TOOLS)
    call = (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
        "\n</tool_call>"
    )
    response = '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>'
    for out in (smol, qwen):
        assert call in out and response in out, out
    assert ChatTemplate(QWEN3).renders_tools is True


def test_qwen3_gets_dict_arguments_not_a_quoted_string():
    out = ChatTemplate(QWEN3).render(ROUND_TRIP, tools=TOOLS)
    assert '"arguments": {"city": "Paris"}' in out and '\\"city\\"' not in out


def test_several_tool_results_share_one_user_turn():
    messages = [*ROUND_TRIP, {"role": "tool", "tool_call_id": "call_2", "content": "second"}]
    out = ChatTemplate(SMOLLM2).render(messages, tools=TOOLS)
    assert "</tool_response>\n<tool_response>\nsecond\n</tool_response><|im_end|>" in out


def test_forced_call_prefix_continues_into_a_parsable_call():
    prefix = forced_call_prefix("get_weather")
    _, calls = parse_tool_calls(prefix + '{"city": "Oslo"}}\n</tool_call>')
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Oslo"}')]
    _, calls = parse_tool_calls(forced_call_prefix(None) + 'now", "arguments": {}}\n</tool_call>')
    assert [c.name for c in calls] == ["now"]


def test_a_template_that_refuses_tool_roles_gets_them_as_user_turns():
    strict = (
        "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
        "{{ raise_exception('unknown role') }}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    )
    template = ChatTemplate(strict)
    assert template.renders_tool_messages is False and template.renders_tools is False
    out = template.render(ROUND_TRIP, tools=TOOLS)
    assert "<|im_start|>tool" not in out and "<tool_response>" in out and "# Tools" in out
