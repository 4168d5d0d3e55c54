"""`llmhost chat` as a user runs it: a subprocess against a real server, one-shot, piped and in a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from llmhost.cli.chat import ChatSession
from llmhost.client import Client
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

TIMING = re.compile(
    r"^time to first token \d+\.\d\d s · total \d+\.\d\d s · (\d+) tokens · \d+\.\d tokens/s$", re.M
)
ANSI = re.compile(rb"\x1b\[[0-9;?]*[a-zA-Z]")


def llmhost_chat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def test_once_prints_the_answer_then_a_timing_line(server):
    r = llmhost_chat("--url", server.url, "--once", "What is the capital of France?", "--max-tokens", "12")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()  # the answer, on stdout alone
    match = TIMING.search(r.stderr)
    assert match, r.stderr
    assert 0 < int(match.group(1)) <= 12


def test_a_question_piped_on_stdin(server):
    r = llmhost_chat("--url", server.url, "--max-tokens", "8", "--temperature", "0", stdin="Name a fruit.\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and TIMING.search(r.stderr)
    again = llmhost_chat(
        "--url", server.url, "--max-tokens", "8", "--temperature", "0", "--once", "Name a fruit."
    )
    assert again.stdout == r.stdout  # greedy: the same answer either way


def test_failures_exit_non_zero_with_the_reason(server):
    unreachable = f"http://127.0.0.1:{free_port()}"
    r = llmhost_chat("--url", unreachable, "--once", "hi")
    assert r.returncode == 1 and "cannot reach" in r.stderr and unreachable in r.stderr
    r = llmhost_chat("--url", server.url, "--model", "nope", "--once", "hi")
    assert r.returncode == 1 and "404" in r.stderr and "nope" in r.stderr
    r = llmhost_chat("--url", server.url, stdin="   \n")
    assert r.returncode == 2 and "no question" in r.stderr


class Terminal:
    """A process on a pseudo-terminal, read with a deadline (pexpect is not installed)."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmhost", "chat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "200"},
        )
        os.close(slave)
        self.output = b""
        self._seen = 0

    def expect(self, pattern: str, timeout_s: float = 60.0) -> str:
        """Wait for `pattern` in the output after the previous match (colour codes removed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = ANSI.sub(b"", self.output).decode(errors="replace")
            match = re.compile(pattern).search(text, self._seen)
            if match:
                self._seen = match.end()
                return text[match.start() : match.end()]
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not seen in:\n{text}")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:  # the process closed the terminal
                    if self.process.poll() is not None:
                        raise AssertionError(f"{pattern!r} not seen before exit:\n{text}") from None

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def terminal(server):
    terminals: list[Terminal] = []

    def start(*args: str) -> Terminal:
        term = Terminal("--url", server.url, "--max-tokens", "8", "--temperature", "0", *args)
        terminals.append(term)
        return term

    yield start
    for term in terminals:
        term.close()


def test_interactive_turn_reset_system_and_quit(terminal):
    term = terminal()
    term.expect(r"model smol")
    term.expect(r"you> ")
    term.send("Hi there\n")
    term.expect(r"llm> \S")  # the answer streams after the label
    term.expect(r"tokens/s")
    term.expect(r"you> ")
    term.send("/reset\n")
    term.expect(r"\(conversation cleared\)")
    term.send("/system Answer in one word.\n")
    term.expect(r"\(system prompt set: Answer in one word\.\)")
    term.send("/nonsense\n")
    term.expect(r"unknown command /nonsense")
    term.send("/quit\n")
    assert term.process.wait(timeout=10) == 0


def test_ctrl_d_leaves(terminal):
    term = terminal()
    term.expect(r"you> ")
    term.send("\x04")
    assert term.process.wait(timeout=10) == 0


def test_session_keeps_history_and_reset_clears_it(server):
    """What the interactive loop drives, in-process: every turn is sent with the ones before it."""
    with Client(server.url, timeout=60) as client:
        session = ChatSession(
            client, "smol", system="Be brief.", sampling={"max_tokens": 6, "temperature": 0}
        )
        first = session.ask("My name is Ada.", lambda _: None)
        assert first.num_tokens is not None and 0 < first.num_tokens <= 6
        assert session.history == [
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": first.text},
        ]
        messages = session.messages("What is my name?")
        assert messages[0] == {"role": "system", "content": "Be brief."}
        assert messages[1:3] == session.history and messages[-1]["content"] == "What is my name?"
        session.reset()
        assert session.messages("x") == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "x"},
        ]
