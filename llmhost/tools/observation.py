"""The verl-tool `/get_observation` contract (CONTRACTS.md §5), independent of HTTP.

An action is the model text of one turn. Code is taken from every `<python>…</python>` block, else from
every fenced block marked `python` (or `py`); the blocks are joined and run as one program. The
observation is the program's stdout then stderr, wrapped the way the action asked: `<result>…</result>`
after `</python>`, a fenced `output` block after fenced code. `finish=true` frees the trajectory's state
and answers an empty observation with done=true; an action without code is valid=false.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from llmhost.tools.sandbox import ExecutionResult, Sandbox

_TAGGED = re.compile(r"<python>(.*?)</python>", re.DOTALL)
_FENCED = re.compile(r"```(?:python|py)[ \t]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Action:
    code: str
    style: str  # "tag" (<python>) or "fence" (```python)


def extract_code(action: str) -> Action | None:
    """The program an action asks to run, or None when it holds no code."""
    blocks = _TAGGED.findall(action)
    style = "tag"
    if not blocks:
        blocks, style = _FENCED.findall(action), "fence"
    blocks = [b.strip("\n") for b in blocks if b.strip()]
    if not blocks:
        return None
    return Action("\n".join(blocks), style)


def format_output(result: ExecutionResult) -> str:
    """stdout then stderr, plus a short note when the run was cut short."""
    text = result.stdout
    if result.stderr:
        text += ("" if not text or text.endswith("\n") else "\n") + result.stderr
    if result.timed_out:
        text += ("" if not text or text.endswith("\n") else "\n") + "[execution timed out]"
    elif result.truncated:
        text += ("" if not text or text.endswith("\n") else "\n") + "[output truncated]"
    return text


def wrap_observation(output: str, style: str) -> str:
    body = output if output.endswith("\n") or not output else output + "\n"
    if style == "tag":
        return f"\n<result>\n{body}</result>\n"
    return f"\n```output\n{body}```\n"


@dataclass
class Observation:
    observation: str | dict  # a dict ({"obs", "invalid_reason"}) only for an invalid action, as verl-tool
    done: bool
    valid: bool
    result: ExecutionResult | None = None  # what the run did (None when nothing ran)


@dataclass
class _Trajectory:
    num_calls: int = 0


@dataclass
class ObservationService:
    """Answers batches of actions; executions within one batch run in parallel through the sandbox."""

    sandbox: Sandbox
    trajectories: dict[str, _Trajectory] = field(default_factory=dict)

    async def observe(
        self, trajectory_ids: list[str], actions: list[str], finish: list[bool] | None = None
    ) -> list[Observation]:
        finish = finish or [False] * len(trajectory_ids)
        num_runs = sum(1 for a, f in zip(actions, finish, strict=True) if not f and extract_code(a))
        if num_runs and await self.sandbox.probe() != "unavailable":
            self.sandbox.admit(num_runs)  # the whole batch, or none of it
        return list(await asyncio.gather(*map(self._one, trajectory_ids, actions, finish)))

    async def _one(self, trajectory_id: str, action: str, is_finish: bool) -> Observation:
        if is_finish:
            self.trajectories.pop(trajectory_id, None)
            return Observation("", done=True, valid=True)
        parsed = extract_code(action)
        if parsed is None:
            return Observation(
                {"obs": "", "invalid_reason": "no code found in <python>…</python> or ```python blocks"},
                done=False,
                valid=False,
            )
        state = self.trajectories.setdefault(trajectory_id, _Trajectory())
        state.num_calls += 1
        result = await self.sandbox.run(parsed.code, is_admitted=True)
        return Observation(
            wrap_observation(format_output(result), parsed.style), done=False, valid=True, result=result
        )
