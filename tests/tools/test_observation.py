"""verl-tool's `/get_observation`: code extraction and wrapping, then the route end to end, against a real
`llmhost tool-server` subprocess and mounted in the main app (in-process and the shared real server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from llmhost.tools.observation import extract_code, format_output, wrap_observation
from llmhost.tools.sandbox import ExecutionResult
from tests.conftest import RunningServer, start_server, stop_server
from tests.scripted_engine import ScriptedEngine, scripted_client
from tests.tools.test_sandbox import BWRAP_WORKS, MODE


# -- extraction and wrapping -------------------------------------------------------------------------
def test_code_from_python_tags_wins_over_fences():
    action = "Compute.\n```python\nprint(0)\n```\n<python>\nprint(1)\n</python> and <python>print(2)</python>"
    parsed = extract_code(action)
    assert parsed is not None and parsed.style == "tag"
    assert parsed.code == "print(1)\nprint(2)"


def test_code_from_fenced_python_blocks():
    parsed = extract_code("Step 1\n```python\nx = 2\n```\nthen\n```py\nprint(x)\n```\n")
    assert parsed is not None and parsed.style == "fence"
    assert parsed.code == "x = 2\nprint(x)"


@pytest.mark.parametrize(
    "action", ["no code here", "```\nprint(1)\n```", "<python>   </python>", "```output\n3\n```"]
)
def test_no_code_found(action):
    assert extract_code(action) is None


def _result(stdout: str = "", stderr: str = "", **kw: object) -> ExecutionResult:
    fields = {"exit_code": 0, "timed_out": False, "truncated": False, "duration_s": 0.1, "mode": "bwrap"}
    return ExecutionResult(stdout=stdout, stderr=stderr, **{**fields, **kw})  # type: ignore[arg-type]


def test_output_is_stdout_then_stderr_with_notes():
    assert format_output(_result("a\n", "b\n")) == "a\nb\n"
    assert format_output(_result("a", "b")) == "a\nb"
    assert format_output(_result("a", timed_out=True)).endswith("\n[execution timed out]")
    assert format_output(_result("a", truncated=True)).endswith("\n[output truncated]")


def test_wrapping_matches_the_action_style():
    assert wrap_observation("42\n", "tag") == "\n<result>\n42\n</result>\n"
    assert wrap_observation("42", "fence") == "\n```output\n42\n```\n"


# -- the route -----------------------------------------------------------------------------------------
async def check_batch_contract(post) -> None:
    """Shared by every way the route is served: order, wrapping, invalid actions, finish."""
    body = {
        "trajectory_ids": ["t-a", "t-b", "t-c"],
        "actions": [
            "I will add.\n<python>print(1 + 1)</python>",
            "```python\nimport time\ntime.sleep(0.2)\nprint('slow second')\n```",
            "no code in this turn",
        ],
        "finish": [False, False, False],
    }
    r = await post(body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["observations"][0] == "\n<result>\n2\n</result>\n"
    assert data["observations"][1] == "\n```output\nslow second\n```\n"
    assert data["observations"][2]["obs"] == "" and "no code" in data["observations"][2]["invalid_reason"]
    assert data["valids"] == [True, True, False]
    assert data["dones"] == [False, False, False]
    assert [r and r["mode"] for r in data["results"]] == [MODE, MODE, None]

    r = await post(
        {
            "trajectory_ids": ["t-a", "t-b"],
            "actions": ["", "<python>print(3)</python>"],
            "finish": [True, False],
        }
    )
    data = r.json()
    assert data["observations"] == ["", "\n<result>\n3\n</result>\n"]
    assert data["dones"] == [True, False] and data["valids"] == [True, True]

    r = await post({"trajectory_ids": ["a", "b"], "actions": ["<python>print(1)</python>"]})
    assert r.status_code == 422 and "actions" in r.json()["detail"]


def start_tool_server(tmp_dir: Path, *args: str, timeout_s: float = 30.0) -> RunningServer:
    # A fake secret in the server's environment: the sandbox must never pass it to the code it runs.
    return start_server(
        tmp_dir, *args, env={"LLMHOST_FAKE_SECRET": "hunter2"}, timeout_s=timeout_s, command="tool-server"
    )


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory):
    srv = start_tool_server(tmp_path_factory.mktemp("tools"), "--sandbox", MODE, "--sandbox-timeout-s", "2")
    yield srv
    stop_server(srv)


def sync_post(http: httpx.Client):
    async def post(body: dict) -> httpx.Response:
        return http.post("/get_observation", json=body)

    return post


@pytest.mark.e2e
async def test_tool_server_subprocess(tool_server):
    assert httpx.get(f"{tool_server.url}/health").json() == {"status": "healthy", "sandbox": MODE}
    assert f"sandbox mode: {MODE}" in tool_server.log()
    with httpx.Client(base_url=tool_server.url, timeout=30) as http:
        await check_batch_contract(sync_post(http))
        r = http.post(
            "/get_observation",
            json={"trajectory_ids": ["t"], "actions": ["<python>import os\nprint(os.environ)</python>"]},
        )
        assert "hunter2" not in r.text


@pytest.mark.e2e
def test_tool_server_timeout_is_reported(tool_server):
    body = {
        "trajectory_ids": ["t"],
        "actions": ["<python>print('start', flush=True)\nwhile True: pass</python>"],
    }
    data = httpx.post(f"{tool_server.url}/get_observation", json=body, timeout=30).json()
    assert data["observations"][0] == "\n<result>\nstart\n[execution timed out]\n</result>\n"
    assert data["results"][0]["timed_out"] is True


async def test_mounted_in_the_main_app():
    async with scripted_client(ScriptedEngine(), sandbox=MODE) as client:
        await check_batch_contract(lambda body, c=client: c.post("/get_observation", json=body))


async def test_main_app_refuses_without_isolation(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)  # as on a machine without bubblewrap
    async with scripted_client(ScriptedEngine(), sandbox="auto") as client:
        r = await client.post(
            "/get_observation", json={"trajectory_ids": ["x"], "actions": ["<python>1</python>"]}
        )
        assert r.status_code == 503 and "rlimits" in r.json()["detail"]
        r = await client.post("/get_observation", json={"trajectory_ids": ["x"], "actions": ["no code"]})
        assert r.status_code == 200 and r.json()["valids"] == [False]


@pytest.mark.e2e
async def test_shared_server_serves_get_observation(server):
    """The real `llmhost serve` (default --sandbox auto): runs code where bubblewrap works, else refuses."""
    assert "sandbox mode:" in server.log()  # probed and logged at start-up
    with httpx.Client(base_url=server.url, timeout=30) as http:
        if BWRAP_WORKS:
            await check_batch_contract(sync_post(http))
        else:
            body = {"trajectory_ids": ["x"], "actions": ["<python>print(1)</python>"]}
            assert http.post("/get_observation", json=body).status_code == 503


def test_tool_server_on_a_busy_port_is_one_line_naming_the_flag():
    import socket
    import subprocess
    import sys

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "llmhost", "tool-server", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"port {port}" in done.stderr and "--port" in done.stderr
    assert "Errno" not in done.stderr  # uvicorn's raw error is no longer what the user reads
