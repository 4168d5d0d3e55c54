"""vLLM's tokenizer routes, in vLLM's shapes: `POST /tokenize`, `POST /detokenize`, `GET /tokenizer_info`.

Loglikelihood harnesses (lm-evaluation-harness with `tokenizer_backend=remote`) and RL trainers use them
to count and split text in the served model's own tokens without a local copy of its tokenizer.

- `/tokenize` takes `prompt` (text; `add_special_tokens` defaults to true, as for `/v1/completions`) or
  `messages` (rendered with the chat template exactly as `/v1/chat/completions` would, through the same
  pipeline; `add_generation_prompt` defaults to true) and answers `{"count", "max_model_len", "tokens"}`,
  plus `token_strs` with `return_token_strs`.
- `/detokenize` takes `tokens` and answers `{"prompt"}`; ids outside the vocabulary are a 400.
- `/tokenizer_info` answers what a client needs to build prompts itself: special tokens, the chat
  template, the context length and the vocabulary size.
Errors are OpenAI-shaped, as on vLLM.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from llmhost.errors import InvalidRequest
from llmhost.faces.openai.responses import ERRORS
from llmhost.faces.openai.schemas import ChatMessage
from llmhost.faces.wire import FaceRouter, ResponseModel
from llmhost.pipeline import ChatInput, TextInput
from llmhost.server.deps import StateDep
from llmhost.server.errors import ErrorShapes
from llmhost.server.item_limit import ItemLimitRoute

router = FaceRouter(tags=["tokenizer"], route_class=ItemLimitRoute, responses=ERRORS)


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: StrictBool | None = None  # default: true for a prompt, false for messages
    add_generation_prompt: StrictBool = True
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    return_token_strs: StrictBool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send either 'prompt' (text) or 'messages' (a conversation)")
        return self


class TokenizeResponse(ResponseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: StrictStr | None = None
    tokens: list[StrictInt] = Field(max_length=1_000_000)


class DetokenizeResponse(ResponseModel):
    prompt: str


class TokenizerInfoResponse(ResponseModel):
    tokenizer_class: str
    bos_token: str
    eos_token: str
    chat_template: str | None
    model_max_length: int
    vocab_size: int


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, state: StateDep) -> TokenizeResponse:
    state.require_loaded()
    state.resolve_model(body.model)
    if body.messages is not None:
        kwargs = dict(body.chat_template_kwargs or {})
        if body.tools is not None:
            kwargs["tools"] = body.tools
        chat = ChatInput(
            [m.to_template() for m in body.messages],
            template_kwargs=kwargs,
            add_generation_prompt=body.add_generation_prompt,
            images=tuple(part for i, m in enumerate(body.messages) for part in m.image_parts(i)),
        )
        [prompt] = await state.generation.prepare([chat], param="messages")
        tokens = prompt.token_ids
        if body.add_special_tokens:  # the template already wrote its BOS; vLLM adds one more on request
            bos = state.generation.engine.tokenize("", add_special=True)
            tokens = bos + tokens
    else:
        text = TextInput(body.prompt or "", add_special=body.add_special_tokens is not False)
        [prompt] = await state.generation.prepare([text], param="prompt")
        tokens = prompt.token_ids
    info = state.generation.info()
    detokenize = state.generation.engine.detokenize
    return TokenizeResponse(
        count=len(tokens),
        max_model_len=info.max_model_len,
        tokens=tokens,
        **({"token_strs": [detokenize([t]) for t in tokens]} if body.return_token_strs else {}),
    )


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, state: StateDep) -> DetokenizeResponse:
    state.require_loaded()
    state.resolve_model(body.model)
    vocab_size = state.generation.info().vocab_size
    if any(not 0 <= t < vocab_size for t in body.tokens):
        raise InvalidRequest(f"'tokens' has ids outside the vocabulary (0..{vocab_size - 1})", param="tokens")
    return DetokenizeResponse(prompt=state.generation.engine.detokenize(body.tokens))


@router.get("/tokenizer_info", response_model=TokenizerInfoResponse)
async def tokenizer_info(state: StateDep) -> TokenizerInfoResponse:
    template = state.require_loaded()
    info = state.generation.info()
    return TokenizerInfoResponse(
        tokenizer_class=f"{info.engine} tokenizer",
        bos_token=info.bos_token,
        eos_token=info.eos_token,
        chat_template=template.source,
        model_max_length=info.max_model_len,
        vocab_size=info.vocab_size,
    )


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    """vLLM's tokenizer routes (OpenAI error shape)."""
    app.include_router(router)
