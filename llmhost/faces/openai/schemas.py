"""OpenAI wire schemas (requests) and their translation to internal `SamplingParams`.

Requests are validated strictly: a string where a number belongs is a 400 naming the field, not a
silent coercion. Unknown fields are ignored, as vLLM does, so newer SDKs keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictInt, StrictStr

from llmhost.conversation.prompt_templates import messages_for_request
from llmhost.conversation.structured import grammar_for_response_format
from llmhost.errors import InvalidRequest
from llmhost.media import ImagePart, image_error
from llmhost.types import MAX_TOP_LOGPROBS, SamplingParams

from .tool_calls import check_tools

Number = Annotated[float, Field(strict=True)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Request):
    type: Literal["text"]
    text: StrictStr


class ImageURL(_Request):
    url: StrictStr  # a base64 data: URL, a file:// URL or an http(s) URL (see llmhost/media/sources.py)
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's image processor sizes it


class ImageURLPart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImageURLPart, Field(discriminator="type")]


class ChatMessage(_Request):
    model_config = ConfigDict(extra="allow", strict=True)  # templates may read extra keys (e.g. name)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_call_id: StrictStr | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: StrictStr | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def image_parts(self, index: int) -> list[ImagePart]:
        """The message's images, each named by its place (`messages[1].content[0]`); user messages only."""
        if not isinstance(self.content, list):
            return []
        parts = []
        for j, part in enumerate(self.content):
            if isinstance(part, ImageURLPart):
                param = f"messages[{index}].content[{j}]"
                image = ImagePart(part.image_url.url, param)
                if self.role != "user":
                    raise image_error(image, f"images are accepted in user messages only, not '{self.role}'")
                parts.append(image)
        return parts

    def _template_content(self) -> str | list[dict[str, Any]]:
        """A string, or with images the text and image parts in order (what vision templates read)."""
        if not isinstance(self.content, list) or all(isinstance(p, TextPart) for p in self.content):
            return self.text()
        return [
            {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
            for p in self.content
        ]

    def to_template(self) -> dict[str, Any]:
        """The message as chat templates expect it: content a string, or a list of parts with images."""
        out: dict[str, Any] = {"role": self.role, "content": self._template_content()}
        for key in ("name", "tool_call_id", "tool_calls", "reasoning_content"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.model_extra:
            out.update({k: v for k, v in self.model_extra.items() if k not in out})
        return out


class StreamOptions(_Request):
    include_usage: StrictBool = False


class ResponseFormat(_Request):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["text", "json_object", "json_schema"]


# Fields other OpenAI-compatible servers (vLLM, llama-server) accept that change what is generated or
# returned, and that llmhost does not implement yet: a request that sets one gets a 400 naming it rather
# than a different answer than it asked for. Unknown fields outside this list (metadata such as `store`,
# `service_tier`, `metadata`) are ignored, as vLLM ignores them.
UNSUPPORTED_FIELDS = frozenset(
    {
        "best_of", "use_beam_search", "length_penalty",
        "guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs",
        "allowed_token_ids", "bad_words", "truncate_prompt_tokens", "logits_processors",
        "return_tokens_as_token_ids", "prompt_embeds", "typical_p", "tfs_z", "mirostat", "mirostat_tau",
        "mirostat_eta", "dry_multiplier", "xtc_probability", "xtc_threshold", "top_a", "n_probs",
        "skip_special_tokens", "spaces_between_special_tokens", "continue_final_message", "echo",
    }
)  # fmt: skip
# Values that ask for nothing beyond the default, so a client that always sends the field still works.
_HARMLESS: dict[str, tuple[Any, ...]] = {
    "skip_special_tokens": (True,),
    "spaces_between_special_tokens": (True,),
    "best_of": (1,),
}


def _refuse_unsupported(extra: dict[str, Any] | None, known: set[str]) -> None:
    for name, value in (extra or {}).items():
        if name not in UNSUPPORTED_FIELDS or name in known:
            continue
        if name in _HARMLESS:
            if value is None or value in _HARMLESS[name]:
                continue
        elif value is None or value is False or value in ({}, []):
            continue
        raise InvalidRequest(f"'{name}' is not supported by this server yet", param=name)


class _SamplingFields(_Request):
    # Unknown fields are kept (not validated) so that `check_unsupported_fields` can see them.
    model_config = ConfigDict(extra="allow", strict=True)

    model: StrictStr | None = None
    n: StrictInt = Field(1, ge=1)
    temperature: Number | None = Field(None, ge=0.0, le=2.0)
    top_p: Number | None = Field(None, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(None, ge=-1)
    min_p: Number | None = Field(None, ge=0.0, le=1.0)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stop_token_ids: list[StrictInt] | None = None
    presence_penalty: Number | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: Number | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: Number | None = Field(None, gt=0.0, le=10.0)
    ignore_eos: StrictBool = False
    include_stop_str_in_output: StrictBool = False
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    # vLLM's: the prompt's and each choice's token ids in the answer (RL trainers keep the exact tokens).
    return_token_ids: StrictBool = False
    # vLLM's: each prompt token's log-probability and the k most likely tokens at its position.
    prompt_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    # OpenAI's: token id (as a string key) → value added to its logit, -100 (never) to 100 (always).
    logit_bias: dict[StrictStr, Number] | None = None
    # vLLM's: end-of-generation and stop_token_ids are not sampled before this many tokens.
    min_tokens: StrictInt | None = Field(None, ge=0)

    def check_unsupported_fields(self) -> None:
        _refuse_unsupported(self.model_extra, set(type(self).model_fields))
        if self.prompt_logprobs is not None and self.stream:  # as vLLM
            raise InvalidRequest(
                "'prompt_logprobs' are not available when 'stream' is true", param="prompt_logprobs"
            )

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    _grammar: str | None = PrivateAttr(None)  # from response_format, set by check_supported

    def sampling(
        self, *, max_tokens: int | None, logprobs: int | None, choice: int, prompt_logprobs: int | None = None
    ) -> SamplingParams:
        seed = None if self.seed is None else self.seed + choice  # n choices must differ, yet repeat
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            min_p=self.min_p or 0.0,
            seed=seed,
            stop=self.stop_list(),
            stop_token_ids=tuple(self.stop_token_ids or ()),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repetition_penalty=self.repetition_penalty or 1.0,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            ignore_eos=self.ignore_eos,
            include_stop_str_in_output=self.include_stop_str_in_output,
            grammar=self._grammar,
            logit_bias=self._logit_bias_pairs(),
            min_tokens=self.min_tokens or 0,
        )

    def _logit_bias_pairs(self) -> tuple[tuple[int, float], ...]:
        """`logit_bias` as (token id, value) pairs; its keys must be token ids written in decimal."""
        pairs: dict[int, float] = {}
        for key, value in (self.logit_bias or {}).items():
            if not key.isdecimal():
                raise InvalidRequest(
                    f"'logit_bias' keys are token ids (like \"1234\"), not {key!r}", param="logit_bias"
                )
            pairs[int(key)] = float(value)
        return tuple(pairs.items())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None  # False: at most one call per answer
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: StrictBool = True
    # The code agent loop (llmhost extension, sent by the OpenAI SDK through `extra_body`); None: the
    # server's setting of the same name. See `faces/openai/code_loop.py`.
    code_tools: StrictBool | None = None
    max_turns: StrictInt | None = Field(None, ge=0, le=100)
    min_turns: StrictInt | None = Field(None, ge=0, le=100)
    action_stop_tokens: StrictStr | list[StrictStr] | None = None
    tool_server_url: StrictStr | None = None
    max_obs_length: StrictInt | None = Field(None, ge=1)

    # A named prompt template (llmhost extension, sent through `extra_body`): see
    # `conversation/prompt_templates.py`.
    prompt_template: StrictStr | None = None
    template_vars: dict[str, Any] | None = None

    def template_messages(self, prompt_templates_dir: str | None) -> list[dict[str, Any]]:
        """The messages for the chat template, rewritten by the named prompt template when one is asked."""
        messages = [m.to_template() for m in self.messages]
        if self.prompt_template is not None and any(isinstance(m["content"], list) for m in messages):
            raise InvalidRequest(
                "a 'prompt_template' cannot be combined with images yet", param="prompt_template"
            )
        return messages_for_request(
            messages, self.prompt_template, self.template_vars, directory=prompt_templates_dir
        )

    def check_supported(self) -> None:
        self.check_unsupported_fields()
        if self.response_format is not None:  # json_object / json_schema: a grammar the engine samples under
            self._grammar = grammar_for_response_format(self.response_format.model_dump())
        check_tools(self.tools, self.tool_choice)
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("'top_logprobs' needs 'logprobs': true", param="top_logprobs")

    def image_parts(self) -> tuple[ImagePart, ...]:
        """Every image of the conversation, in the order the chat template renders them."""
        return tuple(part for i, m in enumerate(self.messages) for part in m.image_parts(i))

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def requested_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_SamplingFields):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    # OpenAI's default for completions; 0 (with `echo` or `prompt_logprobs`): score the prompt only.
    max_tokens: StrictInt | None = Field(16, ge=0)
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    echo: StrictBool = False
    suffix: StrictStr | None = None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise InvalidRequest("'prompt' must not be empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]

    def check_supported(self) -> None:
        self.check_unsupported_fields()
        if self.suffix:
            raise InvalidRequest("'suffix' is not supported", param="suffix")
        if self.max_tokens == 0 and not self.echo and self.prompt_logprobs is None:
            raise InvalidRequest(
                "'max_tokens' must be at least 1, or 0 with 'echo' or 'prompt_logprobs' (the prompt only)",
                param="max_tokens",
            )

    @property
    def requested_prompt_logprobs(self) -> int | None:
        """vLLM's rule: an echoed prompt's `logprobs` are its prompt logprobs."""
        if self.prompt_logprobs is not None:
            return self.prompt_logprobs
        return self.logprobs if self.echo else None
