"""`POST /v1/rewards/consistency`: the seed-000 consistency reward judged by the served model itself.

    {"items": [{"question": …, "completion": "<think>T</think><answer>B</answer>", "solution": "B"}, …]}
    → {"rewards": [1.0, 0.0, …], "judge_letters": ["B", null, …], "policy_letters": ["B", "C", …], …}

Items that score 0 without a judge (no think block, no letter, a letter that differs from the
reference's) never reach the engine; every other item's judge prompt is submitted at once, so the whole
batch rides continuous batching instead of one HTTP round trip per completion (the original's way).
The judge sees the question and the thinking only, with the seed's system prompt, temperature 0.1 and
10 tokens (both can be changed per request). Errors are OpenAI-shaped: a bad body or a judge prompt
that does not fit the context is a 400 naming the item, before any generation starts.

`"scoring": "probability"` judges by probabilities instead, in one step: one token, greedy, with its 20
most likely rivals (and, where the engine takes grammars, that token held to a letter A–H); each
letter's share of the probability the letters hold (`letter_probs`) is read from them, and the reward is
the policy letter's share, a soft reward in [0, 1]; `judge_letters` are the most likely letters.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from llmhost.faces.openai.responses import ERRORS
from llmhost.faces.wire import FaceRouter, ResponseModel
from llmhost.pipeline import ChatInput, GenerationRequest
from llmhost.rewards.letters import (
    JUDGE_MAX_TOKENS,
    JUDGE_SYSTEM_PROMPT,
    JUDGE_TEMPERATURE,
    JUDGE_TOP_LOGPROBS,
    OPTION_LETTER_GRAMMAR,
    extract_option_letter,
    first_token,
    judge_answer,
    judge_messages,
    letter_probabilities,
    plan_item,
)
from llmhost.server.deps import StateDep
from llmhost.server.errors import ErrorShapes
from llmhost.server.item_limit import ItemLimitRoute
from llmhost.types import SamplingParams

router = FaceRouter(tags=["rewards"], route_class=ItemLimitRoute, responses=ERRORS)

Number = Annotated[float, Field(strict=True)]

# A judge that reasons first (Qwen3) would spend its 10 tokens thinking; templates without the switch
# ignore it.
NO_THINKING = {"enable_thinking": False}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ConsistencyItem(_Request):
    question: StrictStr
    completion: StrictStr
    solution: StrictStr


class ConsistencyRequest(_Request):
    items: list[ConsistencyItem] = Field(min_length=1)
    model: StrictStr | None = None
    temperature: Number = Field(JUDGE_TEMPERATURE, ge=0.0, le=2.0)
    max_tokens: StrictInt = Field(JUDGE_MAX_TOKENS, ge=1, le=256)
    system_prompt: StrictStr = JUDGE_SYSTEM_PROMPT
    seed: StrictInt | None = None
    # "letter": the judge writes a letter (seed 000's way); "probability": its letters' probabilities,
    # one token each (`temperature` and `max_tokens` do not apply).
    scoring: Literal["letter", "probability"] = "letter"


class ConsistencyResponse(ResponseModel):
    """One entry per item in every list, in the items' order."""

    object: Literal["rewards.consistency"]
    model: str
    rewards: list[float] = Field(
        description="1.0 when the judge's letter is the policy's, else 0.0; by probability, the policy "
        "letter's share (0.0 for an item the judge did not see)."
    )
    judge_letters: list[str | None] = Field(description="null for an item the judge did not see.")
    policy_letters: list[str | None]
    reference_letters: list[str | None]
    judge_replies: list[str | None] = Field(description="The judge's reply without its thinking.")
    reasons: list[str | None] = Field(description="Why an item was scored 0 without the judge.")
    num_judged: int
    letter_probs: list[dict[str, float] | None] | None = Field(
        None,
        description='With `"scoring": "probability"`: per item, each letter\'s share of the probability '
        "the letters hold (summing to 1; letters not among the 20 most likely tokens are left out).",
    )


@router.post("/v1/rewards/consistency")
async def consistency(body: ConsistencyRequest, state: StateDep, request: Request) -> ConsistencyResponse:
    """Rewards in {0.0, 1.0}, one per item, with the letters that decided each."""
    state.require_loaded()
    model_name = state.resolve_model(body.model)
    plans = [plan_item(item.completion, item.solution) for item in body.items]
    todo = [i for i, p in enumerate(plans) if p.needs_judge]
    chats = [
        ChatInput(
            judge_messages(body.items[i].question, plans[i].thinking or "", body.system_prompt),
            template_kwargs=NO_THINKING,
        )
        for i in todo
    ]
    by_probability = body.scoring == "probability"
    if by_probability:
        grammar = OPTION_LETTER_GRAMMAR if state.generation.info().supports_grammar else None
        params = SamplingParams(
            max_tokens=1, temperature=0.0, logprobs=JUDGE_TOP_LOGPROBS, grammar=grammar, seed=body.seed
        )
    else:
        params = SamplingParams(max_tokens=body.max_tokens, temperature=body.temperature, seed=body.seed)
    results = []
    if chats:  # every judge call is admitted together (or 429 as a whole) and generated as one batch
        generation = await state.generation.start(
            GenerationRequest(
                chats, [[params]] * len(chats), param="items", batch_noun="item", batch_indices=todo
            )
        )
        results = await generation.collect(until_disconnected=request.receive)
    replies: list[str | None] = [None] * len(plans)
    probs: list[dict[str, float] | None] = [None] * len(plans)
    for i, result in zip(todo, results, strict=True):
        replies[i] = judge_answer(result.text)
        if by_probability:
            probs[i] = letter_probabilities(first_token(result.logprobs))
    if by_probability:
        judge_letters = [max(p, key=p.__getitem__) if p else None for p in probs]
        rewards = [(p or {}).get(plan.policy_letter or "", 0.0) for p, plan in zip(probs, plans, strict=True)]
    else:
        judge_letters = [extract_option_letter(r) if r is not None else None for r in replies]
        rewards = [
            1.0 if p.needs_judge and letter == p.policy_letter else 0.0
            for p, letter in zip(plans, judge_letters, strict=True)
        ]
    return ConsistencyResponse(
        object="rewards.consistency",
        model=model_name,
        rewards=rewards,
        judge_letters=judge_letters,
        policy_letters=[p.policy_letter for p in plans],
        reference_letters=[p.reference_letter for p in plans],
        judge_replies=replies,
        reasons=[p.reason for p in plans],
        num_judged=len(todo),
        **({"letter_probs": probs} if by_probability else {}),
    )


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    """`/v1/rewards/consistency`: the judge as a batch reward (OpenAI error shape)."""
    app.include_router(router)
