"""Shared fixtures: the real embedded model, in-process apps, and real servers on free loopback ports."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmhost.models.source import embedded_model_path

# Small contexts keep the KV cache (and the tests) light on 2 cores.
TEST_MAX_MODEL_LEN = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so a killed run leaves no servers."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def start_server(
    tmp_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
    command: str = "serve",
) -> RunningServer:
    """Start `llmhost COMMAND --port P ARGS` (default `serve`) and wait until its /health is 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "llmhost", command, "--port", str(port), *args]
    return start_process(
        cmd, port, tmp_dir / f"{command}-{port}.log", ready_path="/health", env=env, timeout_s=timeout_s
    )


def wait_ready(server: RunningServer, timeout_s: float = 120) -> None:
    """Until `/ready` answers 200: it follows `/health` by a one-token check, which a loaded box delays."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{server.url}/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.1)


def start_process(
    cmd: list[str],
    port: int,
    log_path: Path,
    *,
    ready_path: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> RunningServer:
    """Start a server process (its own session, output to `log_path`, killed if the tests die) and
    wait until `GET ready_path` on `port` answers 200; a process that exits or never gets ready fails
    with its log."""
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    name = Path(cmd[2] if cmd[1] == "-m" else cmd[0]).name
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}{ready_path}", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"{name} not ready within {timeout_s}s:\n{server.log()}")


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture(scope="session")
def model_path() -> Path:
    return embedded_model_path()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real llmhost server for the end-to-end tier, in its bit-reproducible mode: many tests compare
    answers across requests (stream vs not, alone vs batched, same seed), which a prefix-cache hit can
    change at a near-tie (tests/greedy.py). The default mode has `cached_server`."""
    srv = start_server(
        tmp_path_factory.mktemp("server"),
        "--max-model-len",
        str(TEST_MAX_MODEL_LEN),
        "--max-num-seqs",
        "8",
        "--served-model-name",
        "smol,smol-alias",
        "--no-enable-prefix-caching",
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def cached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real llmhost server with its default settings (prefix caching on)."""
    srv = start_server(
        tmp_path_factory.mktemp("cached-server"),
        "--max-model-len",
        str(TEST_MAX_MODEL_LEN),
        "--max-num-seqs",
        "8",
        "--served-model-name",
        "smol",
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
async def reproducible_engine(model_path: Path) -> AsyncIterator:
    """The real llama.cpp engine without prefix caching: per-sequence KV streams, so a sequence's numbers
    never depend on what else runs or ran before (batched == solo bit for bit, seeded samples repeat)."""
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    eng = LlamaCppEngine(
        str(model_path),
        model_name="smol",
        max_model_len=TEST_MAX_MODEL_LEN,
        max_num_seqs=8,
        threads=1,  # lives next to the default `engine`; they run one at a time
        prefix_caching=False,
    )
    await eng.start()
    yield eng
    await eng.close()


@pytest.fixture(scope="session")
async def engine(model_path: Path) -> AsyncIterator:
    """The real llama.cpp engine, in-process (for engine and in-process app tests)."""
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    eng = LlamaCppEngine(str(model_path), model_name="smol", max_model_len=TEST_MAX_MODEL_LEN, max_num_seqs=8)
    await eng.start()
    yield eng
    await eng.close()


@pytest.fixture(scope="session")
def vision_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2.5-VL folder, written once per session (tests/models/vision_model.py)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.models.vision_model import write_vision_model

    return write_vision_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl")


@pytest.fixture(scope="session")
def vision_gguf_dir(vision_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2.5-VL as llama.cpp reads it (tests/models/vision_gguf.py): a folder with the model
    GGUF, its `mmproj-*.gguf` and the image processor's `preprocessor_config.json`, written once."""
    import shutil

    from tests.models.vision_gguf import write_vision_gguf

    folder = tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl-gguf"
    write_vision_gguf(vision_model_path, folder)
    shutil.copy(vision_model_path / "preprocessor_config.json", folder)
    return folder


@pytest.fixture(scope="session")
def text_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny language model without its vision tower (seed 000's text fallback)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.models.vision_model import write_text_model

    return write_text_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.5")
