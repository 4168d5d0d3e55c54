"""Tools in the prompt, hermes style, for chat templates that know nothing about tools.

Qwen2.5/Qwen3 templates render `tools`, assistant `tool_calls` and `tool` messages themselves. Many
ChatML models' templates (SmolLM2's among them) ignore all three, so the model would never hear of the
tools. For those, the conversation is rewritten before rendering into what Qwen2.5's template would
have produced: a system block listing the tools and how to call them, assistant turns with their
`<tool_call>` blocks as text, and tool results as a user turn of `<tool_response>` blocks. Any ChatML
model can then call tools in the format `toolcalls.ToolCallParser` reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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


def tools_system_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system text Qwen2.5's template writes for `tools` (without the chat markup)."""
    lines = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    return TOOLS_PREAMBLE + lines + TOOLS_FORMAT


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


def hermes_tool_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Assistant `tool_calls` and `tool` results as plain text turns, as Qwen2.5's template writes
    them, for a template that ignores both. Messages must have string content and dict arguments."""
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
            message["content"] = _assistant_text(message)
            del message["tool_calls"]
        out.append(message)
    return out


def with_tools_system(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The tools described in the system message (added first when there is none), for a template
    that ignores `tools`."""
    out = [dict(m) for m in messages]
    text = tools_system_text(tools)
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0].get('content') or ''}\n\n{text}"
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


def _assistant_text(message: Mapping[str, Any]) -> str:
    parts = [message.get("content") or ""]
    for call in message.get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, Mapping) else {}
        args = function.get("arguments", {})
        args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        name = json.dumps(function.get("name", ""), ensure_ascii=False)
        parts.append(f'<tool_call>\n{{"name": {name}, "arguments": {args_text}}}\n</tool_call>')
    return "\n".join(p for p in parts if p)


def forced_call_prefix(name: str | None) -> str:
    """Text pre-filled at the start of the assistant turn so the model must write a call.

    With a name (`tool_choice` naming a function) the model only writes the arguments; without one
    (`required`) it chooses the function. This works on every engine, without constrained decoding.
    """
    if name is None:
        return '<tool_call>\n{"name": "'
    return f'<tool_call>\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '
