"""The code agent loop: generate, run the code the model wrote, feed the output back, generate again.

One call of `run_code_loop` is one trajectory, as verl-tool's eval service ran it, with its rough edges
filed off:

- Generation stops at an action stop token (default `</python>`); the engine strips it, the loop puts it
  back, sends the turn's text to a tool backend, and appends the observation (already wrapped to match
  the action: `<result>…</result>` or a fenced `output` block), cut to `max_obs_length` tokens with a
  marker in the middle (head and tail survive: a traceback's last line matters as much as the first).
- Only a stop at an *action* token is an action; a user stop string or token ends the trajectory.
- At most `max_turns` tool turns; after that the action stop tokens are dropped and the model finishes
  freely (verl-tool's last generation). `max_turns=0` means no tools.
- `min_turns`: while fewer tool turns than that have run, a turn that ended on its own (end-of-generation)
  is still searched for code; if it has some, it runs and the loop goes on (this forces extraction, not a
  call: without code the trajectory ends).
- The context is assembled at token level: the model's own tokens are kept when they spell the turn's
  text exactly, the observation is tokenized once and appended. `max_tokens` is a budget over the model's
  tokens across all turns; each turn gets min(budget left, context left). When nothing fits the loop ends
  with finish `length` instead of asking the engine for a generation it would refuse.

The loop yields `Delta`s: model text as it arrives, an `ObservationDelta` per observation, and a last
delta with the finish reason and a `LoopUsage` (model tokens and tool tokens counted apart).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from llmhost.context_window import completion_room
from llmhost.engines.base import Engine
from llmhost.errors import InvalidRequest
from llmhost.tools.backends import ToolBackend
from llmhost.types import Delta, FinishReason, SamplingParams, Usage

log = logging.getLogger("llmhost.tools")

DEFAULT_ACTION_STOP_TOKENS = ("</python>",)


@dataclass(frozen=True)
class LoopConfig:
    max_turns: int = 5
    min_turns: int = 0
    action_stop_tokens: tuple[str, ...] = DEFAULT_ACTION_STOP_TOKENS
    max_obs_length: int | None = 512  # tokens per observation; None: no cut beyond the sandbox's cap

    def __post_init__(self) -> None:
        if self.max_turns < 0:
            raise InvalidRequest("'max_turns' must be at least 0", param="max_turns")
        if self.min_turns < 0:
            raise InvalidRequest("'min_turns' must be at least 0", param="min_turns")
        if self.min_turns > self.max_turns:
            raise InvalidRequest("'min_turns' must not exceed 'max_turns'", param="min_turns")
        if not all(self.action_stop_tokens):
            raise InvalidRequest("action stop tokens must not be empty", param="action_stop_tokens")
        if self.max_obs_length is not None and self.max_obs_length < 1:
            raise InvalidRequest("'max_obs_length' must be at least 1", param="max_obs_length")

    def turn_params(self, params: SamplingParams, *, max_tokens: int, has_tools: bool) -> SamplingParams:
        """One turn's sampling: the user's, plus the action stop tokens while tools are allowed."""
        stop = params.stop
        if has_tools:
            stop = stop + tuple(s for s in self.action_stop_tokens if s not in stop)
        return dataclasses.replace(params, max_tokens=max_tokens, stop=stop)


@dataclass(frozen=True)
class LoopUsage(Usage):
    """`completion_tokens` counts the model's tokens only; tool output is `num_tool_tokens`."""

    num_tool_tokens: int = 0
    num_turns: int = 0  # tool turns that ran code
    num_generations: int = 0
    num_context_tokens: int = 0  # the final context: prompt + model + tool tokens
    # Context tokens the engine computed over all turns; the rest of each turn's context came from its
    # prefix cache (every turn re-sends the whole transcript). None: the engine does not say.
    num_prefilled_tokens: int | None = None
    generation_s: float = 0.0
    tool_s: float = 0.0
    overhead_s: float = 0.0  # the loop's own time: tokenizing, truncating, bookkeeping


@dataclass
class ObservationDelta(Delta):
    """An observation appended to the transcript (not model output). Its tokens are in `tool_token_ids`,
    not `token_ids`, so whatever counts generated tokens from deltas counts the model's only."""

    tool_token_ids: list[int] = dataclasses.field(default_factory=list)
    result: dict | None = None  # the sandbox's execution result, when the backend reported one


@dataclass
class _Clock:
    generation_s: float = 0.0
    tool_s: float = 0.0
    started_s: float = dataclasses.field(default_factory=time.perf_counter)


def settle_tokens(engine: Engine, token_ids: list[int], text: str) -> list[int]:
    """The tokens that continue the context after a turn whose visible text is `text`.

    The model's own tokens are kept when they spell `text` exactly (the usual case, and the one that
    keeps training and serving in the same token space); a trailing end-of-generation token is dropped;
    when the stop string ended inside a token, `text` is tokenized instead (as text: see below)."""
    if token_ids:
        if engine.detokenize(token_ids) == text:
            return token_ids
        if engine.detokenize(token_ids[:-1]) == text:
            return token_ids[:-1]
    return tokenize_untrusted(engine, text)


# Special-token spellings: ChatML-style `<|…|>` (Qwen, SmolLM, Phi…) and DeepSeek's full-width `<｜…｜>`.
_SPECIAL_LOOKING = re.compile(r"<[|｜][^\s<>|｜]{1,64}[|｜]>")


def tokenize_untrusted(engine: Engine, text: str) -> list[int]:
    """Tokens of text that must stay text: a program that prints `<|im_end|>` must not end the model's
    turn or forge a new one. `Engine.tokenize` parses special-token spellings as special tokens, so each
    special-looking span (and the model's own BOS/EOS spelling) is tokenized without its first character
    attached; the text is unchanged."""
    info = engine.info()
    literals = [re.escape(t) for t in (info.eos_token, info.bos_token) if t and len(t) > 1]
    pattern = re.compile("|".join([_SPECIAL_LOOKING.pattern, *literals]))
    tokens: list[int] = []
    pos = 0
    for match in pattern.finditer(text):
        span = match.group()
        tokens += engine.tokenize(text[pos : match.start()]) if match.start() > pos else []
        tokens += engine.tokenize(span[0]) + engine.tokenize(span[1:])
        pos = match.end()
    if pos < len(text):
        tokens += engine.tokenize(text[pos:])
    return tokens


def truncate_observation(engine: Engine, text: str, max_tokens: int | None) -> tuple[str, list[int]]:
    """`text` and its tokens, cut to `max_tokens` by keeping the head and the tail around a marker.

    A long output (the sandbox allows 64 KiB) is not tokenized whole: only a window of characters at
    each end is, which is what keeps a big observation within the loop's per-turn budget. The tokens
    kept always spell a true prefix and a true suffix of `text`."""
    if max_tokens is None:
        return text, tokenize_untrusted(engine, text)
    window = 8 * max_tokens  # characters: tokens are rarely longer, so each window holds enough tokens
    head_src = tail_src = None
    if len(text) > 2 * window:
        head_src = tokenize_untrusted(engine, text[:window])
        tail_src = tokenize_untrusted(engine, text[-window:])
    if head_src is None or tail_src is None or min(len(head_src), len(tail_src)) <= max_tokens // 2 + 1:
        head_src = tail_src = tokenize_untrusted(engine, text)
        if len(head_src) <= max_tokens:
            return text, head_src
    keep = max_tokens - len(engine.tokenize(_cut_marker(len(text))))  # the widest number it can show
    if keep < 2:  # too small for a marker: the head alone
        head = head_src[:max_tokens]
        return engine.detokenize(head), head
    # The last token of a window may be cut short by the window's edge: never keep it.
    head = head_src[: min((keep + 1) // 2, len(head_src) - 1)]
    tail = tail_src[len(tail_src) - min(keep // 2, len(tail_src) - 1) :]
    num_cut = len(text) - len(engine.detokenize(head)) - len(engine.detokenize(tail))
    marker = engine.tokenize(_cut_marker(num_cut))
    tail = tail[max(0, len(head) + len(marker) + len(tail) - max_tokens) :]  # a marker that grew a token
    out = head + marker + tail
    return engine.detokenize(out), out


def _cut_marker(num_chars: int) -> str:
    return f"\n…[{num_chars} characters truncated]…\n"


async def run_code_loop(
    engine: Engine,
    tools: ToolBackend,
    prompt_tokens: Sequence[int],
    params: SamplingParams,
    config: LoopConfig,
    *,
    trajectory_id: str,
) -> AsyncIterator[Delta]:
    """Run one trajectory (see the module docstring); `trajectory_id` names it to the tool backend."""
    max_model_len = engine.info().max_model_len
    context = list(prompt_tokens)
    clock = _Clock()
    num_model = num_tool = num_turns = num_generations = 0
    num_final = 0
    num_prefilled: int | None = 0
    first_cached: int | None = None
    has_tool_state = False  # finish is sent only to a backend that saw this trajectory
    finish, stop_reason = FinishReason.LENGTH, None
    try:
        while True:
            has_tools = num_turns < config.max_turns
            room = completion_room(len(context), max_model_len)
            budget = room if params.max_tokens is None else min(room, params.max_tokens - num_model)
            if budget < 1:
                finish, stop_reason = FinishReason.LENGTH, None
                break
            turn = config.turn_params(params, max_tokens=budget, has_tools=has_tools)
            text, token_ids = "", []
            finish, stop_reason = FinishReason.STOP, None
            t0 = time.perf_counter()
            # The trajectory id keeps every turn on one replica (and its prefix cache) behind a router.
            stream = engine.generate(context, turn, request_id=trajectory_id)
            try:
                async for delta in stream:
                    text += delta.text
                    token_ids.extend(delta.token_ids)
                    if delta.finish_reason is not None:
                        finish, stop_reason = delta.finish_reason, delta.stop_reason
                    if delta.usage is not None:
                        cached = delta.usage.cached_tokens
                        if num_generations == 0:
                            first_cached = cached
                        if cached is None or num_prefilled is None:
                            num_prefilled = None
                        else:
                            num_prefilled += len(context) - cached
                    if delta.text or delta.logprobs:
                        yield Delta(text=delta.text, token_ids=list(delta.token_ids), logprobs=delta.logprobs)
            finally:  # a consumer that leaves mid-turn (client gone, timeout) frees the engine's sequence now
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
            clock.generation_s += time.perf_counter() - t0
            num_generations += 1
            num_model += len(token_ids)

            is_action = has_tools and finish == FinishReason.STOP and stop_reason in config.action_stop_tokens
            # min_turns: a turn that ended on its own (end-of-generation, not a user stop) still counts
            # as an action while too few tool turns have run.
            is_forced = (
                not is_action
                and num_turns < config.min_turns
                and finish == FinishReason.STOP
                and stop_reason is None
            )
            if not (is_action or is_forced):
                num_final = len(token_ids)  # the last turn's tokens end the context as generated
                break
            if is_action and isinstance(stop_reason, str) and not text.endswith(stop_reason):
                text += stop_reason  # the engine strips a stop string; the transcript keeps it
                yield Delta(text=stop_reason)
            context += settle_tokens(engine, token_ids, text)

            t0 = time.perf_counter()
            has_tool_state = True
            reply = await tools.observe(trajectory_id, text)
            clock.tool_s += time.perf_counter() - t0
            if not reply.is_valid and is_forced:
                break  # the model stopped on its own and wrote no code: its answer stands
            num_turns += 1
            if not reply.observation:
                continue  # an action without code: verl-tool answers an empty observation
            obs_text, obs_tokens = truncate_observation(engine, reply.observation, config.max_obs_length)
            room = max(0, completion_room(len(context), max_model_len))
            if len(obs_tokens) > room:  # the observation itself does not fit: keep what does, then stop
                obs_tokens = obs_tokens[:room]
                obs_text = engine.detokenize(obs_tokens) if obs_tokens else ""
                if not obs_tokens:
                    finish, stop_reason = FinishReason.LENGTH, None
                    break
            context += obs_tokens
            num_tool += len(obs_tokens)
            yield ObservationDelta(text=obs_text, tool_token_ids=obs_tokens, result=reply.result)
            await asyncio.sleep(0)  # let a consumer forward the observation before the next turn starts
    finally:
        if has_tool_state:
            _finish_later(tools, trajectory_id)

    total_s = time.perf_counter() - clock.started_s
    yield Delta(
        finish_reason=finish,
        stop_reason=stop_reason,
        usage=LoopUsage(
            prompt_tokens=len(prompt_tokens),
            completion_tokens=num_model,
            cached_tokens=first_cached,
            num_prefilled_tokens=num_prefilled if num_generations else None,
            num_tool_tokens=num_tool,
            num_turns=num_turns,
            num_generations=num_generations,
            num_context_tokens=len(context) + num_final,
            generation_s=round(clock.generation_s, 6),
            tool_s=round(clock.tool_s, 6),
            overhead_s=round(max(0.0, total_s - clock.generation_s - clock.tool_s), 6),
        ),
    )


_finishing: set[asyncio.Task] = set()  # strong references: a bare task may be collected mid-flight


def _finish_later(tools: ToolBackend, trajectory_id: str) -> None:
    """Free the trajectory's state on the tool side without delaying (or being cancelled with) the
    answer: a client that goes away must not leave state behind on a remote tool server."""

    async def finish() -> None:
        try:
            await tools.finish(trajectory_id)
        except Exception as exc:  # the answer has gone out; a failed clean-up is only worth a log line
            log.warning("finishing trajectory %s failed: %s", trajectory_id, exc)

    try:
        task = asyncio.get_running_loop().create_task(finish())
    except RuntimeError:  # no running loop (interpreter shutdown): nothing left to free
        return
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)
