"""`llmhost serve` start-up as a user meets it: real subprocesses. The checks that need no model answer
within seconds, before anything loads; every failure is exit 1 and a last line naming the problem and
the fix; "serving on" appears only once the model is ready."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from llmhost.cli.daemon import process_start_time
from tests.conftest import free_port, start_server, stop_server, wait_ready

pytestmark = pytest.mark.e2e

# Checks that come before the model loads answer well within this, even on a loaded 2-core box.
PREFLIGHT_S = 30


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", "serve", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def last_line(r: subprocess.CompletedProcess) -> str:
    return r.stderr.strip().splitlines()[-1]


def assert_nothing_loaded(r: subprocess.CompletedProcess) -> None:
    assert "llmhost.llamacpp" not in r.stderr and "serving" not in r.stderr, r.stderr


@pytest.fixture
def busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock, sock.getsockname()[1]
    sock.close()


def test_a_busy_port_is_refused_before_the_model_loads(busy_port, tmp_path):
    _, port = busy_port
    started = time.monotonic()
    r = serve("--port", str(port), env={"XDG_STATE_HOME": str(tmp_path)})
    assert time.monotonic() - started < PREFLIGHT_S
    assert r.returncode == 1, r.stderr
    line = last_line(r)
    assert f"port {port} on 127.0.0.1 is in use by another program; choose another --port" in line, line
    assert "Errno" not in r.stderr
    assert_nothing_loaded(r)


def test_a_port_held_by_a_recorded_llmhost_names_llmhost_stop(busy_port, tmp_path):
    _, port = busy_port
    # The pidfile `serve --detach` writes, naming a live process (this one, which holds the port).
    state = tmp_path / "llmhost"
    state.mkdir()
    record = {
        "pid": os.getpid(),
        "port": port,
        "host": "127.0.0.1",
        "start_time": process_start_time(os.getpid()),
        "started_at": time.time(),
        "log_file": str(state / "x.log"),
    }
    (state / f"{port}.pid").write_text(json.dumps(record))
    r = serve("--port", str(port), env={"XDG_STATE_HOME": str(tmp_path)})
    assert r.returncode == 1, r.stderr
    line = last_line(r)
    assert f"llmhost is already running there (pid {os.getpid()})" in line, line
    assert f"`llmhost stop --port {port}`" in line and "--port" in line
    assert_nothing_loaded(r)


def test_a_file_that_is_not_gguf_is_refused_before_loading(tmp_path):
    model = tmp_path / "x.gguf"
    model.write_text("hello, not a model\n")
    started = time.monotonic()
    r = serve("--model", str(model), "--port", str(free_port()))
    assert time.monotonic() - started < PREFLIGHT_S
    assert r.returncode == 1, r.stderr  # was 143 ("Terminated") after trying to load it
    line = last_line(r)
    assert f"{model} is not a GGUF file" in line and "give --model a .gguf file or a model folder" in line
    assert_nothing_loaded(r)


@pytest.mark.parametrize("make", ["missing", "unreadable", "empty folder"])
def test_a_model_that_cannot_be_read_is_one_line(tmp_path, make):
    model = tmp_path / "m.gguf"
    if make == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        model.write_bytes(b"GGUF")
        model.chmod(0)
    elif make == "empty folder":
        model = tmp_path / "folder"
        model.mkdir()
    r = serve("--model", str(model), "--port", str(free_port()))
    assert r.returncode == 1, r.stderr
    assert str(model) in last_line(r) and "Traceback" not in r.stderr
    assert_nothing_loaded(r)


def test_a_model_that_fails_to_load_exits_1_with_the_reason_and_never_says_serving(tmp_path):
    model = tmp_path / "broken.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 8)  # the magic, then a truncated header
    r = serve("--model", str(model), "--port", str(free_port()))
    assert r.returncode == 1, r.stderr
    line = last_line(r)
    assert line.endswith(
        f"start-up failed: the model did not load: llama.cpp could not load {model}; "
        "the messages above say why"
    ), line
    assert "serving" not in r.stderr


def test_unreadable_files_named_by_flags_are_one_line(tmp_path):
    r = serve("--api-key-file", str(tmp_path / "keys.txt"), "--port", str(free_port()))
    assert r.returncode == 1 and "cannot read --api-key-file" in last_line(r), r.stderr
    r = serve("--log-file", str(tmp_path / "no" / "such" / "dir.log"), "--port", str(free_port()))
    assert r.returncode == 1 and "cannot write --log-file" in last_line(r), r.stderr
    assert "Traceback" not in r.stderr


def test_detach_runs_the_same_checks_before_starting_a_child(busy_port, tmp_path):
    _, port = busy_port
    env = {"XDG_STATE_HOME": str(tmp_path)}
    r = serve("--detach", "--port", str(port), env=env)
    assert r.returncode == 1 and "is in use by another program" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1  # one line, not the child's log
    assert not (tmp_path / "llmhost" / f"{port}.pid").exists()


def test_serving_is_logged_once_ready_and_a_clean_stop_removes_the_engine_log_folder(tmp_path):
    srv = start_server(tmp_path, "--max-model-len", "512", "--max-num-seqs", "2")
    try:
        wait_ready(srv)
        deadline = time.monotonic() + 10
        while "serving '" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.1)  # it is logged on the server's next 0.1 s tick
        log = srv.log()
        ready, serving = (
            log.find("ready (engine llama.cpp"),
            log.find(f"serving 'SmolLM2-135M-Instruct' on {srv.url}"),
        )
        assert 0 <= ready < serving, log
        assert log.count("serving '") == 1
        # Where supervised engines log without --engine-log-dir (llmhost/engines/upstream/engine.py).
        engine_logs = Path(tempfile.gettempdir()) / f"llmhost-engines-{srv.process.pid}"
        engine_logs.mkdir()
        (engine_logs / "vllm.log").write_text("a supervised engine's output\n")
        srv.process.send_signal(signal.SIGTERM)
        srv.process.wait(timeout=60)
        assert not engine_logs.exists()
    finally:
        stop_server(srv)
