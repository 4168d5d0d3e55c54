"""`serve --detach`, `status` and `stop` with real background servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port, start_server

pytestmark = pytest.mark.e2e


def llmhost(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}


def test_detach_status_stop_round_trip(env, tmp_path):
    port = str(free_port())
    started = llmhost(
        "serve", "--detach", "--port", port, "--max-model-len", "512", "--max-num-seqs", "2", env=env
    )
    assert started.returncode == 0, started.stderr
    assert f"http://127.0.0.1:{port}" in started.stdout
    pidfile = tmp_path / "state" / "llmhost" / f"{port}.pid"
    record = json.loads(pidfile.read_text())
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200
        status = llmhost("status", "--port", port, "--json", env=env)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["pid"] == record["pid"] and info["ready"] is True
        assert info["model"] == "SmolLM2-135M-Instruct" and info["engine"] == "llama.cpp"
        assert info["requests_running"] == 0 and isinstance(info["requests_running"], int)
        text = llmhost("status", "--port", port, env=env).stdout
        assert " requests_running: 0\n" in text and " requests_waiting: 0\n" in text  # not 0.0
        again = llmhost("serve", "--detach", "--port", port, env=env)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = llmhost("stop", "--port", port, env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not pidfile.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(record["pid"], 0)
    assert llmhost("status", "--port", port, env=env).returncode == 1


def test_detach_startup_failure_shows_the_log(env):
    port = str(free_port())
    r = llmhost("serve", "--detach", "--port", port, "--model", "/no/such/model.gguf", env=env)
    assert r.returncode == 1
    assert "model not found" in r.stderr
    assert llmhost("status", "--port", port, env=env).returncode == 1


def test_stale_pidfile_is_detected_and_cleaned_without_signalling_the_stranger(env, tmp_path):
    port = free_port()
    stranger = subprocess.Popen(["sleep", "60"])  # the pid now belongs to another program
    state = tmp_path / "state" / "llmhost"
    state.mkdir(parents=True)
    pidfile = state / f"{port}.pid"
    # A record of "llmhost" under the stranger's pid, with a start time that is not the stranger's.
    record = {
        "pid": stranger.pid,
        "port": port,
        "host": "127.0.0.1",
        "start_time": 1,
        "started_at": 0.0,
        "log_file": str(state / "x.log"),
    }
    try:
        pidfile.write_text(json.dumps(record))
        r = llmhost("status", "--port", str(port), env=env)
        assert r.returncode == 1 and "stale" in r.stderr
        assert not pidfile.exists()
        pidfile.write_text(json.dumps(record))
        r = llmhost("stop", "--port", str(port), env=env)
        assert r.returncode == 0 and "stale" in r.stdout
        assert not pidfile.exists()
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_sigterm_lets_a_running_stream_finish(tmp_path):
    # A grace far beyond what 80 tokens need even on a loaded 2-core machine (a few tokens/s there).
    srv = start_server(tmp_path, "--max-model-len", "512", "--max-num-seqs", "2", "--shutdown-grace", "300")
    body = {
        "prompt": "Once upon a time",
        "max_tokens": 80,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    lines = []
    with httpx.stream("POST", f"{srv.url}/v1/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            lines.append(line)
            if len(lines) == 3:
                srv.process.send_signal(signal.SIGTERM)
    lines = [x for x in lines if x]
    assert lines[-1] == "data: [DONE]"
    finishes = [
        json.loads(x[6:])["choices"][0]["finish_reason"]
        for x in lines
        if x.startswith("data: {") and json.loads(x[6:])["choices"]
    ]
    assert finishes[-1] == "length"
    deadline = time.monotonic() + 120
    while srv.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # uvicorn exits by re-raising the SIGTERM it handled gracefully, so -15 is a clean stop here.
    assert srv.process.returncode in (0, -signal.SIGTERM)
