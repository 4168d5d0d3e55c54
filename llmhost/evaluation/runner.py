"""Run a QA set against a server: load the JSONL, ask every question, score the answers, time it all.

Three ways to ask, so a team can reproduce how it is graded:
- `predict`: `POST /predict` one prompt at a time, at most `concurrency` in flight;
- `predict-batch`: every prompt in one `POST /predict` request, as the seed-003 harness does;
- `chat`: `POST /v1/chat/completions` (any OpenAI-compatible server), one question per user turn.

Speed is the harness's: Σ len(answer) ÷ wall time of the whole run, in characters per second; tokens per
second too when the API reports usage (the chat API does, /predict does not).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmhost.client import AsyncClient, LlmhostClientError, LlmhostHTTPError
from llmhost.jsonl import read_jsonl

APIS = ("predict", "predict-batch", "chat")
QUESTION_KEYS = ("question", "prompt")
ANSWER_KEYS = ("answer", "reference")


class DatasetError(ValueError):
    """The QA file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class QAItem:
    line: int  # 1-based line number in the file
    question: str
    reference: str


@dataclass
class ItemResult:
    line: int
    question: str
    reference: str
    answer: str = ""
    score: float = 0.0
    latency_s: float | None = None  # None for predict-batch: one request answers all
    completion_tokens: int | None = None
    error: str | None = None


@dataclass
class EvalReport:
    url: str
    api: str
    metric: str
    threshold: float
    num_items: int
    num_errors: int
    mean_score: float
    passed: bool
    wall_time_s: float
    output_chars: int
    chars_per_s: float
    output_tokens: int | None
    tokens_per_s: float | None
    other_means: dict[str, float] = field(default_factory=dict)  # the other RougeL mode, for comparison
    warnings: list[str] = field(default_factory=list)
    items: list[ItemResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _field(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        if key in obj:
            value = obj[key]
            if not isinstance(value, str):
                raise DatasetError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
            return value
    raise DatasetError(f"{where}: needs one of {' or '.join(repr(k) for k in keys)}")


def load_dataset(path: str | Path) -> list[QAItem]:
    """QA items from JSONL lines `{"question"|"prompt": str, "answer"|"reference": str}`.

    Blank lines are skipped; any other bad line raises `DatasetError` naming the file and line."""
    items: list[QAItem] = []
    for number, where, obj in read_jsonl(path, DatasetError):
        if not isinstance(obj, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        items.append(QAItem(number, _field(obj, QUESTION_KEYS, where), _field(obj, ANSWER_KEYS, where)))
    if not items:
        raise DatasetError(f"{path}: no QA items")
    return items


@dataclass
class _Answer:
    text: str
    latency_s: float | None = None
    completion_tokens: int | None = None


async def _ask_predict(client: AsyncClient, question: str, opts: dict[str, Any]) -> _Answer:
    start = time.perf_counter()
    answer = await client.predict(question, **opts)
    return _Answer(str(answer), time.perf_counter() - start)


async def _ask_chat(client: AsyncClient, model: str, question: str, opts: dict[str, Any]) -> _Answer:
    start = time.perf_counter()
    payload = await client.chat_completion([{"role": "user", "content": question}], model=model, **opts)
    latency_s = time.perf_counter() - start
    try:
        text = payload["choices"][0]["message"]["content"] or ""
    except (TypeError, KeyError, IndexError) as exc:
        raise LlmhostHTTPError(200, "no choices[0].message.content in the answer", payload) from exc
    usage = payload.get("usage") or {}
    return _Answer(text, latency_s, usage.get("completion_tokens"))


async def _ask_each(ask: Callable[[str], Any], items: list[QAItem], concurrency: int) -> list[_Answer | str]:
    """Answers in item order; a failed item becomes its error message instead of stopping the run."""
    limit = asyncio.Semaphore(concurrency)

    async def one(item: QAItem) -> _Answer | str:
        async with limit:
            try:
                return await ask(item.question)
            except LlmhostClientError as exc:
                return _error_text(exc)

    return await asyncio.gather(*(one(item) for item in items))


def _error_text(exc: LlmhostClientError) -> str:
    """The client's message, after the transport error's name when there is one (`ConnectError: …`)."""
    cause = exc.__cause__
    return f"{type(cause).__name__}: {exc}" if cause is not None else str(exc)


async def collect_answers(
    url: str,
    items: list[QAItem],
    *,
    api: str,
    concurrency: int = 8,
    api_key: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    timeout_s: float = 600.0,
) -> tuple[list[_Answer | str], float]:
    """Every item's answer (or error message) and the wall time of the whole run."""
    if api not in APIS:
        raise ValueError(f"unknown api {api!r}; choose one of {', '.join(APIS)}")
    start = time.perf_counter()
    async with AsyncClient(url, api_key=api_key, timeout=timeout_s) as client:
        if api == "chat":
            opts = {} if max_tokens is None else {"max_tokens": max_tokens}
            try:
                model = model or (await client.models())[0]
            except (LlmhostClientError, KeyError, IndexError) as exc:
                return [f"cannot find a model name (pass --model): {exc}"] * len(items), 0.0
            start = time.perf_counter()
            answers = await _ask_each(lambda q: _ask_chat(client, model, q, opts), items, concurrency)
            return answers, time.perf_counter() - start
        opts = {} if max_tokens is None else {"max_new_tokens": max_tokens}
        if api == "predict":
            answers = await _ask_each(lambda q: _ask_predict(client, q, opts), items, concurrency)
            return answers, time.perf_counter() - start
        try:
            batch = await client.predict([item.question for item in items], **opts)
        except LlmhostClientError as exc:
            return [_error_text(exc)] * len(items), time.perf_counter() - start
    return [_Answer(str(text)) for text in batch], time.perf_counter() - start


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def build_report(
    url: str,
    items: list[QAItem],
    answers: list[_Answer | str],
    wall_time_s: float,
    *,
    api: str,
    metric: str,
    threshold: float,
) -> EvalReport:
    """Score the answers with `metric` (and the other RougeL mode when it is available) into a report."""
    from llmhost.evaluation import metrics

    scorer = metrics.get_metric(metric)
    results: list[ItemResult] = []
    for item, answer in zip(items, answers, strict=True):
        result = ItemResult(item.line, item.question, item.reference)
        if isinstance(answer, str):
            result.error = answer
        else:
            result.answer, result.latency_s = answer.text, answer.latency_s
            result.completion_tokens = answer.completion_tokens
            result.score = scorer(item.reference, answer.text)
        results.append(result)

    answered = [r for r in results if r.error is None]
    mean_score = _mean([r.score for r in results])
    output_chars = sum(len(r.answer) for r in answered)
    tokens = [r.completion_tokens for r in answered]
    output_tokens = sum(tokens) if answered and all(t is not None for t in tokens) else None
    report = EvalReport(
        url=url,
        api=api,
        metric=metric,
        threshold=threshold,
        num_items=len(results),
        num_errors=len(results) - len(answered),
        mean_score=mean_score,
        passed=mean_score >= threshold and bool(answered),
        wall_time_s=wall_time_s,
        output_chars=output_chars,
        chars_per_s=output_chars / wall_time_s if wall_time_s > 0 else 0.0,
        output_tokens=output_tokens,
        tokens_per_s=output_tokens / wall_time_s if output_tokens is not None and wall_time_s > 0 else None,
        items=results,
    )
    _compare_rouge_modes(report, answered)
    if report.num_errors:
        report.warnings.append(f"{report.num_errors} of {report.num_items} requests failed (scored 0)")
    return report


# The two RougeL modes disagree this much (mean score) before the report warns about it.
ROUGE_DISAGREEMENT = 0.15


def _compare_rouge_modes(report: EvalReport, answered: list[ItemResult]) -> None:
    from llmhost.evaluation import metrics

    others = {"rougeL-jieba": "rougeL-harness", "rougeL-harness": "rougeL-jieba"}
    other = others.get(report.metric)
    if other is None or (other == "rougeL-harness" and not metrics.harness_available()):
        return
    other_scorer = metrics.get_metric(other)
    other_mean = _mean([other_scorer(r.reference, r.answer) for r in answered] + [0.0] * report.num_errors)
    report.other_means[other] = other_mean
    if abs(other_mean - report.mean_score) >= ROUGE_DISAGREEMENT:
        report.warnings.append(
            f"{report.metric} mean {report.mean_score:.3f} and {other} mean {other_mean:.3f} disagree: "
            "rougeL-harness drops every non-ASCII token (Chinese scores 0), rougeL-jieba keeps them"
        )
