"""Tools in the prompt, for chat templates that know nothing about tools, in either call format.

Qwen2.5/Qwen3 templates render `tools`, assistant `tool_calls` and `tool` messages themselves. Many
ChatML models' templates (SmolLM2's among them) ignore all three, so the model would never hear of the
tools. For those, the conversation is rewritten before rendering into what a Qwen template would have
produced: a system block listing the tools and how to call them, assistant turns with their
`<tool_call>` blocks as text, and tool results as a user turn of `<tool_response>` blocks. The calls are
written in the server's tool-call format (`tool_formats.py`): hermes JSON as Qwen2.5's template writes
it (the default), or Qwen3-Coder's XML, so any ChatML model is asked for calls its parser reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FORMAT = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)


QWEN3_CODER_TOOLS_PREAMBLE = "# Tools\n\nYou have access to the following functions:\n\n<tools>"
QWEN3_CODER_TOOLS_FORMAT = (
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:"
    "\n\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n"
    "</parameter>\n<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can "
    "span\nmultiple lines\n</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n"
    "- Function calls MUST follow the specified format: an inner <function=...></function> block must be "
    "nested within <tool_call></tool_call> XML tags\n- Required parameters MUST be specified\n"
    "- You may provide optional reasoning for your function call in natural language BEFORE the function "
    "call, but NOT after\n</IMPORTANT>"
)


def tools_system_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system text Qwen2.5's template writes for `tools` (without the chat markup)."""
    return TOOLS_PREAMBLE + _tool_lines(tools) + TOOLS_FORMAT


def qwen3_coder_system_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tools and Qwen3-Coder's call format, as Qwen's XML-call templates describe them."""
    return QWEN3_CODER_TOOLS_PREAMBLE + _tool_lines(tools) + QWEN3_CODER_TOOLS_FORMAT


def _tool_lines(tools: Sequence[Mapping[str, Any]]) -> str:
    return "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)


def with_dict_arguments(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Assistant `tool_calls` with `function.arguments` as a dict.

    The OpenAI SDK sends arguments as a JSON string; Qwen-style templates write `arguments | tojson`,
    which would quote the string a second time. Arguments that are not a JSON object stay as they are.
    """
    out = []
    for message in messages:
        message = dict(message)
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            message["tool_calls"] = [_call_with_dict_arguments(c) for c in calls]
        out.append(message)
    return out


def _call_with_dict_arguments(call: Any) -> Any:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    function = dict(call["function"])
    args = function.get("arguments")
    if isinstance(args, str):
        try:
            parsed = json.loads(args) if args.strip() else {}
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            function["arguments"] = parsed
    return {**call, "function": function}


def tool_turns_as_text(
    messages: Sequence[Mapping[str, Any]], call_text: Callable[[str, Any], str]
) -> list[dict[str, Any]]:
    """Assistant `tool_calls` (each written by `call_text(name, arguments)`) and `tool` results as plain
    text turns, as Qwen's templates write them, for a template that ignores both. Messages must have
    string content and dict arguments."""
    out: list[dict[str, Any]] = []
    is_responses = False  # the last turn in `out` holds tool results
    for message in messages:
        role = message.get("role")
        if role == "tool":
            block = f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"
            if is_responses:  # consecutive results share one user turn
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
            is_responses = True
            continue
        is_responses = False
        message = dict(message)
        if role == "assistant" and message.get("tool_calls"):
            message["content"] = _assistant_text(message, call_text)
            del message["tool_calls"]
        out.append(message)
    return out


def with_tools_system(messages: Sequence[Mapping[str, Any]], text: str) -> list[dict[str, Any]]:
    """The tools' description `text` in the system message (added first when there is none), for a
    template that ignores `tools`."""
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0].get('content') or ''}\n\n{text}"
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


def _assistant_text(message: Mapping[str, Any], call_text: Callable[[str, Any], str]) -> str:
    parts = [message.get("content") or ""]
    for call in message.get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, Mapping) else {}
        parts.append(call_text(str(function.get("name", "")), function.get("arguments", {})))
    return "\n".join(p for p in parts if p)


def hermes_call_text(name: str, arguments: Any) -> str:
    """One call as Qwen2.5's template writes it."""
    args_text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    name_text = json.dumps(name, ensure_ascii=False)
    return f'<tool_call>\n{{"name": {name_text}, "arguments": {args_text}}}\n</tool_call>'


def qwen3_coder_call_text(name: str, arguments: Any) -> str:
    """One call as Qwen3-Coder's template writes it: a string value as it is, others as JSON.
    Arguments that are not an object (a client's malformed JSON string) have no parameters to show."""
    lines = ["<tool_call>", f"<function={name}>"]
    for key, value in (arguments if isinstance(arguments, Mapping) else {}).items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines += [f"<parameter={key}>", text, "</parameter>"]
    return "\n".join([*lines, "</function>", "</tool_call>"])


def forced_call_prefix(name: str | None) -> str:
    """Text pre-filled at the start of the assistant turn so the model must write a (hermes) call.

    With a name (`tool_choice` naming a function) the model only writes the arguments; without one
    (`required`) it chooses the function. This works on every engine, without constrained decoding.
    """
    if name is None:
        return '<tool_call>\n{"name": "'
    return f'<tool_call>\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '


def qwen3_coder_forced_prefix(name: str | None) -> str:
    """`forced_call_prefix` for Qwen3-Coder's XML calls: up to the name, or through its line."""
    if name is None:
        return "<tool_call>\n<function="
    return f"<tool_call>\n<function={name}>\n"
