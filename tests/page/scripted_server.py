"""A real HTTP server around a scripted engine whose answer follows the question, for the browser tests.

`python -m tests.page.scripted_server --port P [--reasoning-parser qwen3] [--api-key K]` serves the whole
llmhost app (every face, the chat page, auth) with uvicorn, as `llmhost serve` does, but the engine
replays fixed pieces, one every PIECE_DELAY_S, so a test knows what streams and can stop it midway:

- a question that starts with "think" gets `<think>…</think>` before its answer (THINKING, ANSWER);
- one that starts with "long" gets NUM_LONG_PIECES words, long enough to be stopped;
- any other is echoed back, word by word, after "You said: " (markup in a question comes back in the
  answer, so it is model output the page must render safely).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import AsyncIterator, Sequence

import uvicorn

from llmhost.app import create_app
from llmhost.config import Settings
from llmhost.types import Delta, SamplingParams
from tests.scripted_engine import ScriptedEngine

PIECE_DELAY_S = 0.02
THINKING = "Let me weigh this carefully."
ANSWER = "The answer is 42."
NUM_LONG_PIECES = 3000
ECHO_PREFIX = "You said: "

_LAST_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)


def script_for(question: str) -> list[str]:
    if question.startswith("think"):
        return ["<think>", *_words(THINKING), "</think>", "\n\n", *_words(ANSWER)]
    if question.startswith("long"):
        return [f"word{i} " for i in range(NUM_LONG_PIECES)]
    return [ECHO_PREFIX, *re.findall(r"\s*\S+", question)]


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


class QuestionEngine(ScriptedEngine):
    """Answers each request by the script its last user message picks (see the module docstring)."""

    def generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[Delta]:
        questions = _LAST_USER.findall(self.detokenize(prompt_tokens))
        self.queue(script_for(questions[-1] if questions else ""))
        return super().generate(prompt_tokens, params, request_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reasoning-parser", default=None)
    parser.add_argument("--api-key", action="append", default=[])
    args = parser.parse_args()
    settings = Settings(port=args.port, reasoning_parser=args.reasoning_parser, api_key=args.api_key)
    app = create_app(settings, QuestionEngine(piece_delay_s=PIECE_DELAY_S), served_names=["scripted"])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
