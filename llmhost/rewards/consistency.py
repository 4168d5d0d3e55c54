"""The seed-000 consistency reward as a client: any OpenAI-compatible server (llmhost, vLLM) is the judge.

    from llmhost.rewards import consistency_reward

    rewards = consistency_reward(completions, solutions, questions=questions, url="http://127.0.0.1:8000")

For each completion `<think>T</think><answer>A</answer>`: 0 without a think block, without an option
letter, or when A's letter differs from the reference's (no judge call is made for these); otherwise the
judge is asked, with the question and T only, which option T leads to, and the reward is 1.0 when its
letter equals the policy's, else 0.0.

What changed from the original client, on purpose: calls run concurrently (bounded by
`max_concurrency`) instead of one at a time; each has a timeout and is retried with exponential backoff
on connection errors, timeouts, 408/429/5xx (honouring `Retry-After`); and a judge that stays unreachable
is handled by an explicit policy, `on_error="raise"` (raise `JudgeUnavailable`) or a float given as the
reward of every item the judge could not score, logged as a warning. The original silently fell back to
checking the policy against itself, which rewarded every answer that matched the reference whether or not
the reasoning led there.

`route="batch"` sends the whole batch to llmhost's `POST /v1/rewards/consistency` in one request, which
judges every item in one engine batch; `route="chat"` (the default) works against any server.

`scoring="probability"` judges by probabilities: one token per item, greedy, with its 20 most likely
rivals (`logprobs`); each letter's share of the probability the letters hold (`Verdict.letter_probs`)
is read from them, and the reward is the policy letter's share, a soft reward in [0, 1] (0 when no
letter is among them). On the chat route it works with any server that returns `top_logprobs`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import httpx

from llmhost.rewards.judge_io import completion_text, error_message, retry_after_s, run_sync
from llmhost.rewards.letters import (
    JUDGE_MAX_TOKENS,
    JUDGE_SYSTEM_PROMPT,
    JUDGE_TEMPERATURE,
    JUDGE_TOP_LOGPROBS,
    chat_first_token,
    extract_option_letter,
    judge_answer,
    judge_messages,
    letter_probabilities,
    plan_item,
)

log = logging.getLogger("llmhost.rewards")

DEFAULT_URL = "http://127.0.0.1:8000"
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class JudgeUnavailable(Exception):
    """The judge could not score an item after every retry (raised with `on_error="raise"`)."""


@dataclass(frozen=True)
class JudgeConfig:
    url: str = DEFAULT_URL
    model: str | None = None  # None: the first name of the server's GET /v1/models
    api_key: str | None = None
    timeout_s: float = 30.0  # per HTTP attempt (the original's timeout)
    max_retries: int = 3  # attempts beyond the first
    backoff_s: float = 0.5  # first wait; doubles each retry
    max_backoff_s: float = 8.0
    max_concurrency: int = 16  # judge calls in flight at once
    on_error: Literal["raise"] | float = "raise"
    route: Literal["chat", "batch"] = "chat"
    scoring: Literal["letter", "probability"] = "letter"  # "probability": a soft reward, see the module
    temperature: float = JUDGE_TEMPERATURE
    max_tokens: int = JUDGE_MAX_TOKENS
    system_prompt: str = JUDGE_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if self.on_error != "raise" and not isinstance(self.on_error, int | float):
            raise ValueError(f"on_error must be 'raise' or a number, not {self.on_error!r}")
        if isinstance(self.on_error, bool):
            raise ValueError("on_error must be 'raise' or a number, not a bool")
        if self.route not in ("chat", "batch"):
            raise ValueError(f"route must be 'chat' or 'batch', not {self.route!r}")
        if self.scoring not in ("letter", "probability"):
            raise ValueError(f"scoring must be 'letter' or 'probability', not {self.scoring!r}")
        if self.max_retries < 0 or self.max_concurrency < 1 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("need max_retries >= 0, max_concurrency >= 1, timeout_s > 0, backoff_s >= 0")


@dataclass
class Verdict:
    """One item's reward and how it was reached."""

    reward: float
    policy_letter: str | None
    reference_letter: str | None
    judge_letter: str | None = None
    judge_reply: str | None = None
    reason: str | None = None  # why the judge was not asked (a 0 decided locally)
    error: str | None = None  # the judge failed; the reward is the on_error value
    # scoring="probability": each option letter's share of the probability the letters hold.
    letter_probs: dict[str, float] | None = None


@dataclass
class JudgeStats:
    """Counters across every batch a `ConsistencyJudge` scored."""

    num_items: int = 0
    num_judge_calls: int = 0  # items sent to the judge
    num_attempts: int = 0  # HTTP attempts, retries included
    num_retries: int = 0
    num_failures: int = 0  # items the judge could not score


@dataclass
class ConsistencyJudge:
    """Scores batches against one judge server; keeps its config, resolved model name and counters."""

    config: JudgeConfig = field(default_factory=JudgeConfig)
    transport: httpx.AsyncBaseTransport | None = None  # for tests and custom networking
    stats: JudgeStats = field(default_factory=JudgeStats)
    _model: str | None = None

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> ConsistencyJudge:
        """`ConsistencyJudge(JudgeConfig(**kwargs))`; an unknown keyword is a TypeError naming it."""
        known = {f.name for f in fields(JudgeConfig)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"unknown judge option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(replace(JudgeConfig(), **kwargs))

    async def score_async(
        self, completions: Sequence[Any], solutions: Sequence[str], questions: Sequence[str]
    ) -> list[Verdict]:
        texts = [completion_text(c) for c in completions]
        if not (len(texts) == len(solutions) == len(questions)):
            raise ValueError(
                f"completions ({len(texts)}), solutions ({len(solutions)}) and questions "
                f"({len(questions)}) must have the same length"
            )
        self.stats.num_items += len(texts)
        plans = [plan_item(t, str(s)) for t, s in zip(texts, solutions, strict=True)]
        verdicts = [Verdict(0.0, p.policy_letter, p.reference_letter, reason=p.reason) for p in plans]
        todo = [i for i, p in enumerate(plans) if p.needs_judge]
        if not todo:
            return verdicts
        self.stats.num_judge_calls += len(todo)
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        timeout = httpx.Timeout(self.config.timeout_s)
        async with httpx.AsyncClient(
            base_url=self.config.url.rstrip("/"), headers=headers, timeout=timeout, transport=self.transport
        ) as client:
            if self.config.route == "batch":
                items = [
                    {"question": questions[i], "completion": texts[i], "solution": solutions[i]} for i in todo
                ]
                await self._judge_batch(client, items, [verdicts[i] for i in todo])
            else:
                await self._judge_each(client, [questions[i] for i in todo], plans, todo, verdicts)
        failed = [v for v in verdicts if v.error is not None]
        if failed:
            self.stats.num_failures += len(failed)
            if self.config.on_error == "raise":
                raise JudgeUnavailable(
                    f"the judge at {self.config.url} could not score {len(failed)} of {len(todo)} item(s): "
                    f"{failed[0].error}"
                )
            log.warning(
                "judge at %s failed on %d of %d item(s); they get the on_error reward %s (first error: %s)",
                self.config.url,
                len(failed),
                len(todo),
                self.config.on_error,
                failed[0].error,
            )
            for v in failed:
                v.reward = float(self.config.on_error)
        return verdicts

    def score(
        self, completions: Sequence[Any], solutions: Sequence[str], questions: Sequence[str]
    ) -> list[Verdict]:
        """`score_async` from synchronous code (trainers call reward functions synchronously)."""
        return run_sync(self.score_async(completions, solutions, questions))

    # -- HTTP ----------------------------------------------------------------------------------------
    async def _judge_each(
        self,
        client: httpx.AsyncClient,
        questions: list[str],
        plans: list[Any],
        todo: list[int],
        verdicts: list[Verdict],
    ) -> None:
        """One chat call per item, at most `max_concurrency` in flight."""
        try:
            model = await self._resolve_model(client)  # once, before the calls fan out
        except JudgeUnavailable as exc:
            for i in todo:
                verdicts[i].error = str(exc)
            return
        limit = asyncio.Semaphore(self.config.max_concurrency)
        await asyncio.gather(
            *(
                self._judge_one(client, limit, model, question, plans[i].thinking or "", verdicts[i])
                for question, i in zip(questions, todo, strict=True)
            )
        )

    async def _judge_one(
        self,
        client: httpx.AsyncClient,
        limit: asyncio.Semaphore,
        model: str,
        question: str,
        thinking: str,
        verdict: Verdict,
    ) -> None:
        by_probability = self.config.scoring == "probability"
        body: dict[str, Any] = {
            "model": model,
            "messages": judge_messages(question, thinking, self.config.system_prompt),
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if by_probability:  # one token: its rivals' probabilities are the verdict
            body.update(
                temperature=0.0,
                max_tokens=1,
                logprobs=True,
                top_logprobs=JUDGE_TOP_LOGPROBS,
                chat_template_kwargs={"enable_thinking": False},  # the first token must be the answer
            )
        async with limit:
            try:
                answer = await self._post(client, "/v1/chat/completions", body)
                choice = answer["choices"][0]
                # A reasoning judge may put `<think>…</think>` before its letter (or vLLM splits it out).
                reply = judge_answer(choice["message"].get("content") or "")
                probs = letter_probabilities(chat_first_token(choice)) if by_probability else None
            except (JudgeUnavailable, KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
                verdict.error = f"{type(exc).__name__}: {exc}"
                return
        verdict.judge_reply = reply
        if by_probability:
            verdict.letter_probs = probs
            verdict.judge_letter = max(probs, key=probs.__getitem__) if probs else None
            verdict.reward = (probs or {}).get(verdict.policy_letter or "", 0.0)
            return
        verdict.judge_letter = extract_option_letter(reply)
        verdict.reward = 1.0 if verdict.judge_letter == verdict.policy_letter else 0.0

    async def _judge_batch(
        self, client: httpx.AsyncClient, items: list[dict], verdicts: list[Verdict]
    ) -> None:
        body: dict[str, Any] = {
            "items": items,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if self.config.scoring != "letter":
            body["scoring"] = self.config.scoring
        if self.config.model is not None:
            body["model"] = self.config.model
        try:
            answer = await self._post(client, "/v1/rewards/consistency", body)
            rewards, letters = answer["rewards"], answer["judge_letters"]
            replies = answer.get("judge_replies") or [None] * len(items)
            probs = answer.get("letter_probs") or [None] * len(items)
            if len(rewards) != len(items):
                raise TypeError(f"the server returned {len(rewards)} rewards for {len(items)} items")
        except (JudgeUnavailable, KeyError, TypeError) as exc:
            for v in verdicts:
                v.error = f"{type(exc).__name__}: {exc}"
            return
        for v, reward, letter, reply, p in zip(verdicts, rewards, letters, replies, probs, strict=True):
            v.reward, v.judge_letter, v.judge_reply, v.letter_probs = float(reward), letter, reply, p

    async def _resolve_model(self, client: httpx.AsyncClient) -> str:
        if self.config.model is not None:
            return self.config.model
        if self._model is None:
            listing = await self._request(client, "GET", "/v1/models", None)
            try:
                self._model = listing["data"][0]["id"]
            except (KeyError, IndexError, TypeError) as exc:
                raise JudgeUnavailable(f"GET /v1/models named no model: {listing!r}") from exc
        return self._model

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
        return await self._request(client, "POST", path, body)

    async def _request(self, client: httpx.AsyncClient, method: str, path: str, body: Any) -> Any:
        """One call with retries: connection errors, timeouts and 408/429/5xx are retried with
        exponential backoff (or the server's Retry-After); any other error status fails at once."""
        last = "no attempt made"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.stats.num_retries += 1
            self.stats.num_attempts += 1
            retry_after: float | None = None
            try:
                response = await client.request(method, path, json=body)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc or 'no detail'}"
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise JudgeUnavailable(f"{method} {path} answered non-JSON: {exc}") from exc
                last = f"HTTP {response.status_code}: {error_message(response)}"
                if response.status_code not in _RETRY_STATUSES:
                    raise JudgeUnavailable(f"{method} {path} failed with {last}")
                retry_after = retry_after_s(response)
            if attempt < self.config.max_retries:
                await asyncio.sleep(self._backoff_s(attempt, retry_after))
        raise JudgeUnavailable(
            f"{method} {path} failed after {self.config.max_retries + 1} attempt(s): {last}"
        )

    def _backoff_s(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.config.max_backoff_s)
        wait = min(self.config.backoff_s * 2**attempt, self.config.max_backoff_s)
        return wait * random.uniform(0.8, 1.2)  # jitter: a batch of failed calls does not retry in step


# -- the plain functions ---------------------------------------------------------------------------
async def consistency_reward_async(
    completions: Sequence[Any],
    solutions: Sequence[str],
    *,
    questions: Sequence[str],
    url: str = DEFAULT_URL,
    **options: Any,
) -> list[float]:
    """Rewards in {0.0, 1.0} (in [0, 1] with `scoring="probability"`), or the `on_error` value; `options`
    are `JudgeConfig` fields."""
    judge = ConsistencyJudge.from_kwargs(url=url, **options)
    return [v.reward for v in await judge.score_async(completions, solutions, questions)]


def consistency_reward(
    completions: Sequence[Any],
    solutions: Sequence[str],
    *,
    questions: Sequence[str],
    url: str = DEFAULT_URL,
    **options: Any,
) -> list[float]:
    """The synchronous `consistency_reward_async`."""
    return run_sync(consistency_reward_async(completions, solutions, questions=questions, url=url, **options))
