"""Reading option letters (A–H) out of model text (or, judging by probabilities, out of a first token's
log-probabilities), and the parts of a `<think>…</think><answer>…</answer>` completion: the pure half of
the consistency reward, shared by the client (`consistency.py`) and the server route
(`llmhost/faces/rewards.py`).

Extraction is strict on purpose. The seed's judge scored a completion by comparing letters, so a letter
read where none was meant turns noise into reward: the English article in "A planet that…" is not option
A, "I think" holds no option, and "B or C" names no single option. Rules, first that applies wins:

1. The whole text is one letter, give or take markup: `B`, `b.`, `(C)`, `**D**`, `[E]`, `<answer>F</answer>`.
2. An explicit marker before a letter: `Answer: B`, `the answer is (C)`, `option D`, `答案是B`, `选 E`,
   `选择：F`, `选项G`. With several markers, the last wins (a final answer comes after earlier guesses).
   English markers need an upper-case letter ("the answer is a planet" names no option); Chinese ones
   accept either case.
3. The text opens with a labelled letter: `B. Mars`, `C) Jupiter`, `D、木星`, `E：…`.
4. A standalone upper-case letter, bracketed or bare (`(C)`, `**D**`, `B`), when exactly one such letter
   appears; a capital `A` followed by a lower-case word is the article, not an option.

Anything else is `None`: no option named, or more than one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmhost.types import TokenLogprob

OPTION_LETTERS = "ABCDEFGH"

# Markup and punctuation that may surround a lone letter: brackets, emphasis, quotes, full stops, and
# the full-width forms Chinese text uses.
_WRAP = r"[\s*_`'\"“”‘’()\[\]{}（）【】《》<>.。,，:：;；!！?？、-]*"
_WHOLE = re.compile(rf"^{_WRAP}([A-Ha-h]){_WRAP}$")
_TAG = re.compile(r"</?[A-Za-z_][\w-]*>")

_L = r"[(\[（【*_`'\"“‘\s]*"  # what may sit between a marker and its letter
_END = r"(?![A-Za-z0-9])"
# The marker is matched in any case, the letter after it only in upper case.
_EN_MARKER = re.compile(
    r"(?i:\b(?:final\s+)?answer(?:\s+is)?|\bcorrect\s+(?:answer|option|choice)(?:\s+is)?|\boption|\bchoice)"
    rf"\s*[:：=]?{_L}([A-H]){_END}"
)
_ZH_MARKER = re.compile(
    rf"(?:答案(?:应该|应)?(?:是|为)?|正确(?:答案|选项)(?:是|为)?|选项|选择|应选|选)\s*[:：]?{_L}([A-Ha-h]){_END}"
)
_LEADING = re.compile(rf"^{_L}([A-H])\s*(?:[.)）:：、．]|\*\*)")
_BARE = re.compile(r"(?<![A-Za-z0-9])([A-H])(?![A-Za-z0-9])")
# "A planet…" is the article; "A is wrong", "A or B" still name option A.
_ARTICLE = re.compile(r"A\s+(?!(?:is|was|and|or|seems|looks|would|could|can|must|should|fits)\b)[a-z]")

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_option_letter(text: str | None) -> str | None:
    """The option letter (upper case) that `text` names, or None (see the module docstring)."""
    if not text:
        return None
    text = text.strip()
    plain = _TAG.sub(" ", text)  # <answer>B</answer> → " B "
    whole = _WHOLE.match(plain)
    if whole:
        return whole.group(1).upper()
    marked = [
        (m.start(), m.group(1)) for pattern in (_EN_MARKER, _ZH_MARKER) for m in pattern.finditer(plain)
    ]
    if marked:
        return max(marked)[1].upper()
    leading = _LEADING.match(plain)
    if leading:
        return leading.group(1)
    found = {
        m.group(1)
        for m in _BARE.finditer(plain)
        if not (m.group(1) == "A" and _ARTICLE.match(plain, m.start()))
    }
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class Completion:
    """A policy completion split into its thinking and its answer (None when absent)."""

    thinking: str | None
    answer: str | None


def split_completion(text: str) -> Completion:
    """`<think>T</think><answer>A</answer>` → (T, A).

    A completion whose prompt already opened the think block (Qwen3 templates end with `<think>\\n`)
    starts inside it, so text before a lone `</think>` is the thinking. Without `<answer>` tags, the
    text after `</think>` is the answer. Blank thinking counts as none."""
    thinking: str | None = None
    rest = text
    match = _THINK.search(text)
    if match:
        thinking, rest = match.group(1), text[match.end() :]
    elif "</think>" in text and "<think>" not in text:
        thinking, _, rest = text.partition("</think>")
    if thinking is not None and not thinking.strip():
        thinking = None
    answer_match = _ANSWER.search(rest) or _ANSWER.search(text)
    answer = answer_match.group(1) if answer_match else (rest if thinking is not None else text)
    return Completion(thinking.strip() if thinking else None, answer.strip() or None)


def judge_answer(reply: str) -> str:
    """The judge's reply without its thinking, if it thought; empty when it only thought (a reply cut
    inside its reasoning names no option, even if the reasoning mentions one)."""
    answer = _THINK.sub("", reply)
    if "</think>" in answer:
        answer = answer.split("</think>", 1)[1]
    if "<think>" in answer:
        answer = answer.split("<think>", 1)[0]
    return answer.strip()


def reference_letter(solution: str) -> str | None:
    """The option letter of a reference solution: `B`, `<answer>B</answer>` or a whole completion."""
    return extract_option_letter(split_completion(solution).answer or solution)


# The seed-000 judge prompt: the judge sees the question and the thinking only, never the answer, so
# agreement means the reasoning really leads to the letter the policy gave.
JUDGE_SYSTEM_PROMPT = "You are a professional question-answering assistant."
JUDGE_USER_PROMPT = (
    "Based on the thinking process below, which option does it lead to? Reply with only one letter (A-H).\n"
    "Question: {question}\n"
    "Thinking process: {thinking}"
)
JUDGE_TEMPERATURE = 0.1
JUDGE_MAX_TOKENS = 10
# Judging by probabilities reads the first answer token's most likely tokens (OpenAI's most).
JUDGE_TOP_LOGPROBS = 20
# The first answer token must be an option letter (GBNF, for engines that take a grammar).
OPTION_LETTER_GRAMMAR = f"root ::= [{OPTION_LETTERS[0]}-{OPTION_LETTERS[-1]}]"


def judge_messages(question: str, thinking: str, system_prompt: str = JUDGE_SYSTEM_PROMPT) -> list[dict]:
    """The chat messages that ask the judge which option `thinking` leads to."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": JUDGE_USER_PROMPT.format(question=question, thinking=thinking)},
    ]


def letter_probabilities(candidates: Iterable[tuple[str, float]]) -> dict[str, float] | None:
    """Each option letter's share of the probability that the letters hold among `candidates`, the first
    answer token's most likely tokens as (text, logprob): `B` and ` B` both count for B. None when no
    candidate is a letter. Letters outside the candidates were less likely than all of them, so with
    the top 20 the shares are what the judge believes, renormalised over the options."""
    mass: dict[str, float] = {}
    seen: set[str] = set()
    for text, logprob in candidates:
        letter = text.strip()
        if text in seen or len(letter) != 1 or letter not in OPTION_LETTERS:
            continue
        seen.add(text)  # the sampled token may be listed among its rivals too
        mass[letter] = mass.get(letter, 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if not total:
        return None
    return {letter: mass[letter] / total for letter in sorted(mass)}


def first_token(logprobs: Sequence[TokenLogprob] | None) -> list[tuple[str, float]]:
    """An answer's first token and its most likely rivals, as (text, logprob), from the engine's
    logprobs (the server's route)."""
    if not logprobs:
        return []
    first = logprobs[0]
    rivals = [(t.token_bytes.decode("utf-8", "replace"), t.logprob) for t in first.top]
    return [(first.token_bytes.decode("utf-8", "replace"), first.logprob), *rivals]


def chat_first_token(choice: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The same from one choice of a chat completion's JSON (the client's chat route)."""
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content:
        raise ValueError("the judge returned no logprobs (does it support top_logprobs?)")
    first = content[0]
    rivals = [(t["token"], float(t["logprob"])) for t in first.get("top_logprobs") or []]
    return [(first["token"], float(first["logprob"])), *rivals]


@dataclass(frozen=True)
class Plan:
    """What one item needs: a judge call (`thinking` set) or a reward of 0 decided without one."""

    policy_letter: str | None
    reference_letter: str | None
    thinking: str | None
    reason: str | None  # why no judge call is needed, or None when one is

    @property
    def needs_judge(self) -> bool:
        return self.reason is None


def plan_item(completion: str, solution: str) -> Plan:
    """Decide whether an item can be scored 0 without the judge (seed-000 rules, in order)."""
    parts = split_completion(completion)
    policy = extract_option_letter(parts.answer)
    reference = reference_letter(solution)
    if parts.thinking is None:
        return Plan(policy, reference, None, "no think block")
    if policy is None:
        return Plan(policy, reference, parts.thinking, "no option letter in the answer")
    if reference is None:
        return Plan(policy, reference, parts.thinking, "no option letter in the reference solution")
    if policy != reference:
        return Plan(policy, reference, parts.thinking, "answer differs from the reference")
    return Plan(policy, reference, parts.thinking, None)
