"""`llmhost chat`: talk to a running server from the terminal.

It streams through the OpenAI-compatible `/v1/chat/completions` rather than the simple `/api/v1` API:
that stream reports token usage (for the tokens/s line), carries reasoning separately when the server
splits it, takes every sampling option, and works against any OpenAI-compatible server (vLLM,
llama-server), not only llmhost.

Only typer is imported at module level (this module is imported by `llmhost --help`); the HTTP
client and rich load when the command runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from llmhost.client import Client

DEFAULT_URL = "http://127.0.0.1:8000"
# The OpenAI API's default temperature (1.0) makes small models ramble; 0.8 is llama.cpp's and Ollama's
# chat default.
DEFAULT_TEMPERATURE = 0.8

HELP_TEXT = "/reset clears the conversation · /system TEXT sets the system prompt · /quit or Ctrl-D leaves"


@dataclass
class Answer:
    text: str
    ttft_s: float | None  # seconds to the first text (answer or reasoning); None when nothing came
    total_s: float
    num_tokens: int | None  # completion tokens as the server counted them; None if it did not say

    def timing_line(self) -> str:
        ttft = "n/a" if self.ttft_s is None else f"{self.ttft_s:.2f} s"
        parts = [f"time to first token {ttft}", f"total {self.total_s:.2f} s"]
        if self.num_tokens is not None:
            # End to end (prompt processing included), as a user waiting for the answer sees it.
            rate = self.num_tokens / self.total_s if self.total_s > 0 else 0.0
            parts += [f"{self.num_tokens} tokens", f"{rate:.1f} tokens/s"]
        return " · ".join(parts)


@dataclass
class ChatSession:
    """The conversation so far, and one streamed answer at a time."""

    client: Client
    model: str | None
    system: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, str]] = field(default_factory=list)
    # Extra request fields sent with every turn: a named prompt template and its variables. The server
    # rewrites the last user turn with it, so the history keeps the plain questions.
    extra_body: dict[str, Any] = field(default_factory=dict)

    def messages(self, question: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.history, {"role": "user", "content": question}]

    def ask(
        self,
        question: str,
        on_text: Callable[[str], None],
        on_reasoning: Callable[[str], None] | None = None,
    ) -> Answer:
        """Stream one answer; the turn joins the history only once the answer is complete."""
        opts = {**self.sampling, **self.extra_body}
        if self.model is not None:
            opts["model"] = self.model
        started = time.perf_counter()
        first_s: float | None = None
        pieces: list[str] = []
        num_tokens: int | None = None
        for chunk in self.client.chat_completion_stream(self.messages(question), **opts):
            if chunk.get("usage"):
                num_tokens = chunk["usage"].get("completion_tokens")
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                content = delta.get("content")
                if (reasoning or content) and first_s is None:
                    first_s = time.perf_counter() - started
                if reasoning and on_reasoning is not None:
                    on_reasoning(reasoning)
                if content:
                    pieces.append(content)
                    on_text(content)
        answer = Answer("".join(pieces), first_s, time.perf_counter() - started, num_tokens)
        self.history += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer.text},
        ]
        return answer

    def reset(self) -> None:
        self.history.clear()


def chat(
    url: str = typer.Option(
        DEFAULT_URL, "--url", help="Base URL of the llmhost (or any OpenAI-compatible) server."
    ),
    api_key: str | None = typer.Option(None, "--api-key", help="Sent as 'Authorization: Bearer KEY'."),
    system: str | None = typer.Option(None, "--system", help="System prompt for the conversation."),
    once: str | None = typer.Option(
        None, "--once", help="Ask this one question, print the answer and a timing line, and exit."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model name to request. Default: the first served."
    ),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Most tokens per answer."),
    temperature: float = typer.Option(
        DEFAULT_TEMPERATURE, "--temperature", min=0.0, max=2.0, help="Sampling temperature (0: greedy)."
    ),
    timeout: float = typer.Option(600.0, "--timeout", min=0.1, help="Seconds to wait for one answer."),
    template: str | None = typer.Option(
        None, "--template", help="Named prompt template the server applies (rag-zh, rag-en, simple-zh, …)."
    ),
    context_file: str | None = typer.Option(
        None, "--context-file", help="File whose text is the template's `context` (the documents)."
    ),
    template_var: list[str] = typer.Option(
        [], "--template-var", help="KEY=VALUE for the template (repeatable), e.g. custom_prompt=Be brief."
    ),
) -> None:
    """Chat with a running server: streams answers, keeps the conversation.

    --once (or a question piped on stdin) prints one answer, then a timing line on stderr.
    """
    from llmhost.client import Client, LlmhostClientError

    sampling = {k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None}
    extra_body = _template_body(template, context_file, template_var)
    with Client(url, timeout=timeout, api_key=api_key) as client:
        try:
            session = ChatSession(
                client, model or client.models()[0], system, sampling, extra_body=extra_body
            )
        except (LlmhostClientError, IndexError, KeyError) as exc:
            typer.echo(f"error: cannot start a chat with {url}: {exc}", err=True)
            raise typer.Exit(1) from exc
        if once is None and not sys.stdin.isatty():
            once = sys.stdin.read().strip()
            if not once:
                typer.echo("error: no question on stdin", err=True)
                raise typer.Exit(2)
        if once is not None:
            raise typer.Exit(_ask_once(session, once))
        _interactive(session, url)


def _template_body(template: str | None, context_file: str | None, pairs: list[str]) -> dict[str, Any]:
    """`prompt_template` and `template_vars` for the request body; bad options exit 2 with the reason."""
    variables: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            typer.echo(f"error: --template-var wants KEY=VALUE, got {pair!r}", err=True)
            raise typer.Exit(2)
        variables[key.strip()] = value
    if context_file is not None:
        try:
            with open(context_file, encoding="utf-8") as f:
                variables["context"] = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            typer.echo(f"error: cannot read --context-file {context_file}: {exc}", err=True)
            raise typer.Exit(2) from exc
    if template is None:
        if variables:
            typer.echo("error: --context-file and --template-var need --template NAME", err=True)
            raise typer.Exit(2)
        return {}
    return {"prompt_template": template, "template_vars": variables}


def _ask_once(session: ChatSession, question: str) -> int:
    from llmhost.client import LlmhostClientError

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        answer = session.ask(question, write)
    except LlmhostClientError as exc:
        sys.stdout.write("\n")
        typer.echo(f"error: {exc}", err=True)
        return 1
    sys.stdout.write("\n")
    sys.stdout.flush()
    typer.echo(answer.timing_line(), err=True)
    return 0


def _interactive(session: ChatSession, url: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    from llmhost.client import LlmhostClientError

    console = Console(highlight=False)
    console.print(f"[bold]llmhost chat[/] · {escape(url)} · model [cyan]{escape(str(session.model))}[/]")
    console.print(f"[dim]{HELP_TEXT}[/]")

    def write(text: str) -> None:
        console.file.write(text)
        console.file.flush()

    def write_reasoning(text: str) -> None:
        console.print(text, style="dim italic", end="", markup=False)

    while True:
        try:
            line = console.input("[bold green]you>[/] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        question = line.strip()
        if not question:
            continue
        if question.startswith("/"):
            command, _, arg = question.partition(" ")
            if command in ("/quit", "/exit"):
                return
            if command == "/reset":
                session.reset()
                console.print("[dim](conversation cleared)[/]")
            elif command == "/system":
                session.system = arg.strip() or None
                shown = f"set: {session.system}" if session.system else "cleared"
                console.print(f"[dim](system prompt {escape(shown)})[/]")
            else:
                console.print(f"[yellow]unknown command {escape(command)}[/] [dim]{HELP_TEXT}[/]")
            continue
        console.print("[bold blue]llm>[/] ", end="")
        try:
            answer = session.ask(question, write, write_reasoning)
        except KeyboardInterrupt:
            console.print("\n[yellow](interrupted; this turn is dropped)[/]")
            continue
        except LlmhostClientError as exc:
            console.print(f"\n[red]error:[/] {escape(str(exc))}")
            continue
        console.print()
        console.print(f"[dim]{answer.timing_line()}[/]")
