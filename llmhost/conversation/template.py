"""Chat-template rendering with the model's own Jinja template, in a sandbox.

Templates come from GGUF metadata (`tokenizer.chat_template`) or a Hugging Face folder
(`chat_template.jinja` or `tokenizer_config.json`). They are untrusted text shipped with a model, so
they run in Jinja's immutable sandbox: no attribute tricks, no mutation of the messages passed in.
The globals and filters match what transformers' `apply_chat_template` provides, so templates written
for it (Qwen, Llama, SmolLM, DeepSeek) render the same here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmhost.conversation.tool_formats import ToolCallFormat, ToolCallParserName, resolve_tool_call_format
from llmhost.conversation.tool_prompt import tool_turns_as_text, with_dict_arguments, with_tools_system
from llmhost.errors import TemplateError

log = logging.getLogger("llmhost.conversation")

# Used when a model ships no template at all (llama.cpp and Ollama do the same).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise_exception(message: str) -> None:
    raise TemplateError(f"the chat template refused the conversation: {message}", param="messages")


def _tojson(
    value: Any,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
) -> str:
    # transformers overrides Jinja's tojson: no HTML escaping, unicode kept.
    return json.dumps(
        value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        tool_call_parser: ToolCallParserName = "auto",
    ) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.tool_call_parser = tool_call_parser  # --tool-call-parser, resolved by `tool_call_format`

    @cached_property
    def _compiled(self) -> jinja2.Template:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            return env.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"the model's chat template does not compile: {exc}") from exc

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **template_kwargs: Any,
    ) -> str:
        """Render a conversation. `template_kwargs` (e.g. `enable_thinking`) reach the template as
        variables, as transformers' `apply_chat_template(**kwargs)` does.

        Tools: a template that renders them gets `tools` and the messages as they are (tool-call
        arguments as dicts); for one that ignores them the conversation is rewritten in the
        server's tool-call format (`tool_prompt`), so any ChatML model can call tools."""
        try:
            return self._render(messages, add_generation_prompt, tools, template_kwargs)
        except TemplateError:
            raise
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"the chat template tried an unsafe operation: {exc}") from exc
        # Also what a client's own values cause before the template runs (`chat_template_kwargs`
        # carrying a `tools` that is not a list of functions, a message field of the wrong type).
        except (jinja2.TemplateError, TypeError, KeyError, ValueError, AttributeError) as exc:
            raise TemplateError(
                f"the chat template could not render these messages: {exc}", param="messages"
            ) from exc

    def _render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool,
        tools: Sequence[Mapping[str, Any]] | None,
        template_kwargs: dict[str, Any],
    ) -> str:
        if any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
            messages = with_dict_arguments(messages)
            if not self.renders_tool_messages:
                messages = tool_turns_as_text(messages, self.tool_call_format.call_text)
        if tools and not self.renders_tools:
            messages, tools = with_tools_system(messages, self.tool_call_format.system_text(tools)), None
        context = dict(template_kwargs)
        context.update(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        if tools:
            context["tools"] = list(tools)
        return self._compiled.render(**context)

    @cached_property
    def renders_tools(self) -> bool:
        """Whether the template itself describes `tools` to the model (SmolLM2's ignores them).

        Found by rendering a probe and looking for its marker: templates differ too much to tell
        from their source."""
        tools = [{"type": "function", "function": {"name": "llmhost_probe_tool", "parameters": {}}}]
        return "llmhost_probe_tool" in self._probe([{"role": "user", "content": "probe"}], tools)

    @cached_property
    def renders_tool_messages(self) -> bool:
        """Whether the template itself renders assistant `tool_calls` and `tool` results."""
        text = self._tool_messages_probe
        return "llmhost_probe_call" in text and "llmhost_probe_result" in text

    @cached_property
    def writes_xml_calls(self) -> bool:
        """Whether the template writes an assistant's calls in Qwen3-Coder's XML (`<function=NAME>`)."""
        return "<function=llmhost_probe_call>" in self._tool_messages_probe

    @cached_property
    def _tool_messages_probe(self) -> str:
        function = {"name": "llmhost_probe_call", "arguments": {"llmhost_probe_arg": "x"}}
        call = {"id": "call_0", "type": "function", "function": function}
        probe = [
            {"role": "user", "content": "probe"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": "llmhost_probe_result"},
        ]
        return self._probe(probe, None)

    @cached_property
    def tool_call_format(self) -> ToolCallFormat:
        """How the model writes tool calls: `--tool-call-parser`, or (auto) what this template writes."""
        is_auto = self.tool_call_parser == "auto"
        return resolve_tool_call_format(
            self.tool_call_parser, template_writes_xml_calls=is_auto and self.writes_xml_calls
        )

    def _probe(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        try:
            return self._compiled.render(
                messages=messages, tools=tools, add_generation_prompt=True, bos_token="", eos_token=""
            )
        except Exception:  # a template that cannot render the probe does not render what it tests
            return ""

    @classmethod
    def from_model_folder(cls, folder: str | Path) -> ChatTemplate | None:
        """Read a Hugging Face folder's template (`chat_template.jinja` wins over tokenizer_config)."""
        folder = Path(folder)
        config: dict[str, Any] = {}
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
        source: str | None = None
        jinja_path = folder / "chat_template.jinja"
        if jinja_path.is_file():
            source = jinja_path.read_text(encoding="utf-8")
        else:
            raw = config.get("chat_template")
            if isinstance(raw, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
                named = {t.get("name"): t.get("template") for t in raw if isinstance(t, dict)}
                raw = named.get("default") or next(iter(named.values()), None)
            source = raw if isinstance(raw, str) else None
        if source is None:
            return None
        return cls(
            source,
            bos_token=_token_str(config.get("bos_token")),
            eos_token=_token_str(config.get("eos_token")),
        )

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        bos_token: str = "",
        eos_token: str = "",
        tool_call_parser: ToolCallParserName = "auto",
    ) -> ChatTemplate:
        """`--chat-template FILE`: read and compiled at once, so a broken file fails at start-up."""
        try:
            source = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"--chat-template {path}: {exc}") from None
        template = cls(source, bos_token=bos_token, eos_token=eos_token, tool_call_parser=tool_call_parser)
        try:
            template._compiled  # noqa: B018 (compiles it)
        except TemplateError as exc:
            raise TemplateError(f"--chat-template {path}: {exc.__cause__ or exc.message}") from None
        return template

    @classmethod
    def for_engine(
        cls,
        source: str | None,
        *,
        bos_token: str,
        eos_token: str,
        tool_call_parser: ToolCallParserName = "auto",
    ) -> ChatTemplate:
        if not source:
            log.warning("the model ships no chat template; using ChatML")
            source = CHATML_TEMPLATE
        return cls(source, bos_token=bos_token, eos_token=eos_token, tool_call_parser=tool_call_parser)


def _token_str(value: Any) -> str:
    if isinstance(value, dict):  # older tokenizer_config.json: {"content": "<s>", ...}
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""
