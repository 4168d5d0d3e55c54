"""The README and docs/ cannot go stale: their runnable shell blocks run against a real server.

A block is marked by an HTML comment on the line right before its fence (GitHub does not show it):

    <!-- runnable: server -->            talks to a running server on 127.0.0.1:8000
    <!-- runnable: local -->             needs no server
    <!-- runnable: server exit=1 -->     ends with that exit status (default 0)
    <!-- runnable: server needs=sandbox -->  skipped, saying why, where the code sandbox cannot isolate

Comment lines after a block's last command are the output it shows: each must appear in the output,
in order, with `…` standing for anything (`# {"response":"…","success":true}`).

Each block runs with bash (`set -e`, pipefail) from the repository root, with this virtual environment's
bin first on PATH, against ONE server on a free port serving the embedded model: `127.0.0.1:8000`,
`localhost:8000` and `http://127.0.0.1:8000` in a block become that server's address, and `llmhost chat`
without `--url` gets it. Blocks that start or stop servers, need a GPU, the network, vLLM or minutes of
work stay unmarked. Also checked here, without a server: every setting and route is in docs/, every
relative link and anchor resolves, every command is written as `.venv/bin/…`, and the README stays short.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server, wait_ready

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 300  # about ten minutes of reading; reference material belongs in docs/
BLOCK_TIMEOUT_S = 240.0

MARKER = re.compile(r"^\s*<!--\s*runnable:\s*(?P<spec>[^>]*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")  # also inside list items
SHELL_LANGS = ("bash", "sh", "shell", "console")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    kind: str | None = None  # "server" or "local" when marked runnable
    exit_code: int = 0
    needs: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def shown_output(self) -> list[str]:
        """The `# …` lines after the last command: what the block's output must contain."""
        lines = self.code.rstrip("\n").split("\n")
        shown: list[str] = []
        while lines and lines[-1].startswith("# "):
            shown.insert(0, lines.pop()[2:])
        return shown


def parse_blocks(page: Path) -> list[Block]:
    """Every fenced block of a Markdown page, with the runnable marker right before it, if any."""
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), None)
        assert end is not None, f"{page.name}:{i + 1}: a fence that is never closed"
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        options = _marker_options(marker.group("spec"), page, i) if marker else {}
        indent = len(fence.group("indent"))
        code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
        blocks.append(Block(page, i + 1, fence.group("lang"), code, **options))
        i = end + 1
    return blocks


def _marker_options(spec: str, page: Path, index: int) -> dict:
    kind, *rest = spec.split()
    where = f"{page.name}:{index}"
    assert kind in ("server", "local"), f"{where}: runnable kind must be server or local, not {kind!r}"
    options: dict = {"kind": kind}
    for item in rest:
        key, _, value = item.partition("=")
        if key == "exit":
            options["exit_code"] = int(value)
        elif key == "needs":
            options["needs"] = tuple(value.split(","))
        else:
            raise AssertionError(f"{where}: unknown runnable option {item!r}")
    return options


def runnable_blocks() -> list[Block]:
    return [b for page in PAGES for b in parse_blocks(page) if b.kind is not None]


def for_server(code: str, url: str) -> str:
    """The block's commands aimed at the test server instead of the README's 127.0.0.1:8000."""
    address = url.removeprefix("http://")
    code = code.replace("http://127.0.0.1:8000", url)
    code = code.replace("127.0.0.1:8000", address).replace("localhost:8000", address)
    return re.sub(r"\bllmhost chat\b(?![^\n]*--url)", f"llmhost chat --url {url}", code)


def shows(expected: list[str], output: str) -> str | None:
    """None when every expected line's pieces (split at `…`) appear in `output` in order, whitespace
    runs compared as one space; else the first piece that is missing."""
    text = " ".join(output.split())
    position = 0
    for line in expected:
        for piece in line.split("…"):
            piece = " ".join(piece.split())
            if not piece:
                continue
            found = text.find(piece, position)
            if found < 0:
                return piece
            position = found + len(piece)
    return None


# -- the blocks, run ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The quick start's server (`make serve`: the embedded model) on a free port; a 2048-token context
    keeps its KV cache small. One thread: llama.cpp's threads spin at barriers, and on a busy 2-core box
    two of them made a 32-token answer take 65-77 s instead of 0.7 s (measured while other tests ran)."""
    server = start_server(tmp_path_factory.mktemp("readme"), "--max-model-len", "2048", "--threads", "1")
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


def _sandbox_mode(server: RunningServer) -> str | None:
    return httpx.get(f"{server.url}/health", timeout=10).json().get("sandbox")


@pytest.mark.e2e
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.id)
def test_runnable_block(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    code = block.code
    if block.kind == "server":
        server: RunningServer = request.getfixturevalue("readme_server")
        if "sandbox" in block.needs and _sandbox_mode(server) in (None, "unavailable"):
            pytest.skip("the code sandbox cannot isolate here (no working bubblewrap)")
        code = for_server(code, server.url)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "XDG_STATE_HOME": str(tmp_path / "state"),  # never the user's pidfiles
        "COLUMNS": "120",
        "TERM": "dumb",
    }
    result = subprocess.run(
        ["bash", "-c", "set -e -o pipefail\n" + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    report = f"{block.id} ran:\n{code}\n--- exit {result.returncode}, output:\n{output[-4000:]}"
    assert result.returncode == block.exit_code, report
    missing = shows(block.shown_output(), output)
    assert missing is None, f"the output shown has {missing!r}, which the run did not print\n{report}"


# -- what the blocks must cover ------------------------------------------------------------------------
CONTRACTS = {
    "OpenAI chat": "chat.completions.create",
    "OpenAI completions": "completions.create(",
    "OpenAI Responses": "responses.create(",
    "Anthropic Messages": "anthropic.Anthropic(",
    "judge reward": "/v1/rewards/consistency",
    "simple chat": "/api/v1/chat",
    "simple chat stream": "/api/v1/chat/stream",
    "evaluation": "/predict",
    "verl-tool code tool": "/get_observation",
    "chat CLI": "llmhost chat",
}


def test_the_readme_runs_an_example_of_every_contract() -> None:
    marked = "".join(b.code for b in parse_blocks(README) if b.kind == "server")
    missing = [name for name, needle in CONTRACTS.items() if needle not in marked]
    assert not missing, f"README.md has no runnable example of: {', '.join(missing)}"


def test_every_marker_sits_on_a_shell_block() -> None:
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            if MARKER.match(line):
                fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
                assert fence and fence.group("lang") in SHELL_LANGS, (
                    f"{page.name}:{i + 1}: a runnable marker must be right before a ```bash fence"
                )


def test_the_test_helpers_read_blocks_as_documented() -> None:
    block = Block(README, 1, "bash", 'curl -s localhost:8000/x\n# {"a":"…","b":1}\n# done\n', kind="server")
    assert block.shown_output() == ['{"a":"…","b":1}', "done"]
    assert shows(block.shown_output(), '{"a":"anything","b":1}\n\ndone\n') is None
    assert shows(block.shown_output(), '{"a":"x","b":2} done') == '","b":1}'
    assert shows(["done", '{"a":"'], '{"a":"x"} done') == '{"a":"'  # order matters
    code = for_server(
        "curl localhost:8000/a http://127.0.0.1:8000/b\n.venv/bin/llmhost chat --once hi\n", "http://h:1"
    )
    assert code == "curl h:1/a http://h:1/b\n.venv/bin/llmhost chat --url http://h:1 --once hi\n"
    assert for_server("llmhost chat --url http://127.0.0.1:8000 --once x", "http://h:1").count("--url") == 1


# -- docs/ keeps up with the code ------------------------------------------------------------------------
def test_every_setting_is_in_the_configuration_page() -> None:
    from llmhost.config import Settings

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"`--{name.replace('_', '-')}" not in page]
    assert not missing, f"docs/configuration.md does not describe: {', '.join(missing)}"


def test_every_route_is_in_the_api_page() -> None:
    from llmhost.app import create_app
    from llmhost.config import Settings
    from tests.scripted_engine import ScriptedEngine

    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    schema = create_app(Settings(), ScriptedEngine(), served_names=["x"]).openapi()
    routes = {
        f"{method.upper()} {path}" for path, operations in schema["paths"].items() for method in operations
    }
    missing = sorted(r for r in routes if f"`{r}`" not in page)
    assert len(routes) > 10 and not missing, f"docs/api.md does not list: {', '.join(missing)}"


# -- links and commands ---------------------------------------------------------------------------------
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but `-` and `_` dropped, spaces → `-`."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, flags=re.M)}


def test_relative_links_and_anchors_resolve() -> None:
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


# A command the checkout runs from its own environment, written bare.
BARE = re.compile(r"(?:^|&&|\|\||;|\|)\s*(?:[A-Z_]+=\S+\s+)*(llmhost|pip|pip3|pytest|ruff)\s")


def test_commands_are_written_one_way() -> None:
    wrong = []
    for page in PAGES:
        for block in parse_blocks(page):
            if block.lang not in SHELL_LANGS:
                continue
            for n, line in enumerate(block.code.split("\n")):
                command = line.split(" #", 1)[0]
                if line.lstrip().startswith("#"):
                    continue
                if BARE.search(command) or re.search(r"pip install\s+['\"]?llmhost\[", command):
                    wrong.append(f"{block.page.name}:{block.line + 1 + n}: {line.strip()}")
    assert not wrong, "write .venv/bin/llmhost, .venv/bin/pip install -e '.[extra]':\n" + "\n".join(wrong)


def test_the_readme_reads_in_ten_minutes() -> None:
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= MAX_README_LINES, (
        f"README.md has {count} lines (at most {MAX_README_LINES}): move reference material to docs/"
    )
