"""The browser tier: Debian's chromium, driven headless by Playwright, against real servers.

`make browser-deps` (a prerequisite of `make test`) installs chromium; where it cannot, it leaves the
reason in .chromium.failed and these tests skip naming it. Playwright downloads no browser here: it
runs the system's (`LLMHOST_CHROMIUM` names another binary).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningServer, free_port, start_process, stop_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FAILED = ROOT / ".chromium.failed"  # written by scripts/install-chromium.sh
ARTIFACTS = ROOT / "test-artifacts" / "page"  # screenshots, git-ignored
API_KEY = "page-test-key"


def chromium_path() -> str | None:
    return os.environ.get("LLMHOST_CHROMIUM") or shutil.which("chromium")


def chromium_skip_reason() -> str | None:
    if chromium_path():
        return None
    why = CHROMIUM_FAILED.read_text().strip() if CHROMIUM_FAILED.is_file() else "it has not been installed"
    return f"no chromium for the browser tests ({why}); `make browser-deps` installs it"


def start_scripted_server(tmp_dir: Path, *args: str) -> RunningServer:
    """tests/page/scripted_server.py as a real server process on a free loopback port."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.page.scripted_server", "--port", str(port), *args]
    return start_process(
        cmd, port, tmp_dir / f"scripted-{port}.log", ready_path="/health", env={"PYTHONPATH": str(ROOT)}
    )


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The scripted engine's server: no API key, no reasoning parser (`<think>` arrives in the content)."""
    srv = start_scripted_server(tmp_path_factory.mktemp("page-scripted"))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The scripted engine's server with `--api-key` and `--reasoning-parser qwen3`."""
    srv = start_scripted_server(
        tmp_path_factory.mktemp("page-locked"), "--api-key", API_KEY, "--reasoning-parser", "qwen3"
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)  # a loaded 2-core box streams slowly
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        yield launched
        launched.close()


@dataclass
class Session:
    """One page in a fresh browser context (its own localStorage), and what it did."""

    page: object
    requests: list = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def hosts(self) -> set[str]:
        return {urlsplit(r.url).hostname or urlsplit(r.url).scheme for r in self.requests}

    def chat_requests(self) -> list:
        return [r for r in self.requests if r.url.endswith("/v1/chat/completions")]


# Chromium logs every non-2xx fetch as a console error; the page meets 401s on purpose in the key test.
_EXPECTED_CONSOLE = re.compile(r"Failed to load resource: the server responded with a status of 401")


@pytest.fixture
def open_page(browser) -> Iterator:
    """`open_page(url, **context_options)` → a `Session`; fails the test on a script error in the page."""
    contexts = []
    sessions: list[Session] = []

    def open_(url: str, **context_options: object) -> Session:
        context = browser.new_context(**context_options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        session = Session(page)
        page.on("request", lambda request: session.requests.append(request))
        page.on("dialog", lambda dialog: (session.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: session.errors.append(f"uncaught: {error}"))
        page.on(
            "console",
            lambda message: (
                message.type == "error"
                and not _EXPECTED_CONSOLE.search(message.text)
                and session.errors.append(f"console: {message.text}")
            ),
        )
        page.goto(url)
        sessions.append(session)
        return session

    yield open_
    for context in contexts:
        context.close()
    for session in sessions:
        assert not session.errors, session.errors


def save_screenshot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
