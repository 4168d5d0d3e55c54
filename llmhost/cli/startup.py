"""What `llmhost serve` does between its settings and a ready server.

Cheap checks run first, before anything loads: the model file (a readable GGUF, or a model folder) and
the port (bound here and handed to uvicorn, so nothing can take it between the check and the start).
"serving on" is logged only once the model has generated its first token. Every start-up failure is one
line naming the problem and what to do, and exit status 1.
"""

from __future__ import annotations

import errno
import logging
import shutil
import socket
from pathlib import Path
from typing import Any

import uvicorn

from llmhost.config import Settings

log = logging.getLogger("llmhost")

GGUF_MAGIC = b"GGUF"


class StartupError(Exception):
    """A start-up check failed; the message is one line: the problem, then what to do."""


# -- the model ----------------------------------------------------------------------------------------
def check_model(settings: Settings) -> None:
    """The model `--model` names exists and is a readable GGUF file or a model folder. With
    --fallback-model the chain decides at load time which model serves, so only a lone model is checked."""
    from llmhost.errors import ModelLoadError
    from llmhost.models.source import resolve_model

    if settings.fallback_model:
        return
    try:
        source = resolve_model(settings.model)
    except ModelLoadError as exc:
        raise StartupError(f"{exc.message}; check --model") from None
    if source.format == "gguf":
        head = _read_head(source.path, len(GGUF_MAGIC))
        if head != GGUF_MAGIC:
            raise StartupError(
                f"{source.path} is not a GGUF file (it does not start with the bytes 'GGUF': "
                "an unfinished download, or another format); give --model a .gguf file or a model folder"
            )
    else:
        _read_head(source.path / "config.json", 1)


def _read_head(path: Path, num_bytes: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(num_bytes)
    except OSError as exc:
        raise StartupError(
            f"cannot read the model file {path}: {exc.strerror or exc}; check its permissions"
        ) from None


def check_api_key_file(settings: Settings) -> None:
    if settings.api_key_file is None:
        return
    try:
        Path(settings.api_key_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(f"cannot read --api-key-file {settings.api_key_file}: {reason}") from None


# -- the port -----------------------------------------------------------------------------------------
def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to, as asyncio's create_server would open
    them; a port in use (or a host that is not this machine's) is a StartupError naming the flag."""
    try:
        return _listen(host, port)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve --host {host}: {exc.strerror}; give an IP address") from None
    except OSError as exc:
        raise StartupError(_bind_problem(exc, host, port)) from None


def check_port(host: str, port: int) -> None:
    """Fail now if `host:port` cannot be bound (for `serve --detach`, before the child starts)."""
    for sock in bind_listeners(host, port):
        sock.close()


def _listen(host: str, port: int) -> list[socket.socket]:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(2048)  # uvicorn's backlog; listening now keeps the port ours while the model loads
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_problem(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        from llmhost.cli import daemon

        record = daemon.PidRecord.load(port)
        if record is not None and record.is_alive():
            return (
                f"port {port} is in use: llmhost is already running there (pid {record.pid}); "
                f"stop it with `llmhost stop --port {port}`, or choose another --port"
            )
        hint = _free_port_hint(host, port)
        return f"port {port} on {host} is in use by another program; choose another --port{hint}"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port}; choose --port 1024 or above"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine; use 127.0.0.1, 0.0.0.0 or one of its own"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port"


def _free_port_hint(host: str, port: int) -> str:
    for candidate in range(port + 1, min(port + 20, 65535) + 1):
        try:
            sockets = _listen(host, candidate)
        except OSError:
            continue
        for sock in sockets:
            sock.close()
        return f" (e.g. --port {candidate} is free)"
    return ""


# -- the server ---------------------------------------------------------------------------------------
def run_server(settings: Settings) -> int:
    """Serve until stopped. Returns the exit status: 0 after a clean stop, 1 when start-up failed."""
    try:
        check_model(settings)
        check_api_key_file(settings)
        sockets = bind_listeners(settings.host, settings.port)
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    try:
        return _serve(settings, sockets)
    finally:
        for sock in sockets:
            sock.close()


def _serve(settings: Settings, sockets: list[socket.socket]) -> int:
    from llmhost.app import create_app
    from llmhost.engines.registry import create_served_engine
    from llmhost.errors import LlmhostError, ModelLoadError

    try:
        # --engine, --fallback-model and --engine-url decide what runs (llmhost/engines/registry.py).
        engine, names = create_served_engine(settings)
    except ModelLoadError as exc:
        log.error("%s", exc)
        return 1
    # The app reports a failed load to the server, which exists only once the app does.
    fastapi_app = create_app(
        settings, engine, served_names=names, on_load_failure=lambda exc: server.load_failed(exc)
    )
    port = sockets[0].getsockname()[1]  # the one the system chose, for --port 0
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    server = ServingServer(
        fastapi_app, settings, ready_message=f"serving '{names[0]}' on http://{host}:{port}"
    )
    server.run(sockets=sockets)
    if server.load_failures:
        exc = server.load_failures[0]
        reason = exc.message if isinstance(exc, LlmhostError) else f"{type(exc).__name__}: {exc}"
        log.error("start-up failed: the model did not load: %s; the messages above say why", reason)
        return 1
    return 0


class ServingServer(uvicorn.Server):
    """uvicorn's server, plus: stop (without a signal) when the model fails to load, log `ready_message`
    once the model generates, and remove this process's temporary engine-log folder after a clean stop."""

    def __init__(self, app: Any, settings: Settings, *, ready_message: str) -> None:
        super().__init__(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_level="warning" if settings.log_level == "info" else settings.log_level,
                timeout_graceful_shutdown=settings.shutdown_grace,
            )
        )
        self.settings = settings
        self.ready_message = ready_message
        self.load_failures: list[BaseException] = []
        self._state = app.state.llmhost  # ServerState (llmhost/server/state.py)
        self._is_announced = False

    def load_failed(self, exc: BaseException) -> None:
        """`create_app`'s on_load_failure: a server that cannot generate must not pretend to be up.
        (A SIGTERM to this process would stop it too, but uvicorn re-raises it after shutdown: exit 143.)"""
        self.load_failures.append(exc)
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        # Ticks run every 0.1 s once the sockets serve; ServerState.is_ready follows a one-token check.
        if not self._is_announced and self._state.is_ready:
            self._is_announced = True
            log.info("%s", self.ready_message)
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Here, not after run(): uvicorn re-raises a SIGTERM it handled as soon as serve() returns.
        await super().shutdown(sockets)
        if not self.load_failures:
            _remove_default_engine_logs(self.settings)


def _remove_default_engine_logs(settings: Settings) -> None:
    """Supervised engines log to a per-process temporary folder unless --engine-log-dir is given
    (llmhost/engines/upstream/engine.py default_log_dir); it goes with the process after a clean stop.
    A failed start keeps it: the failure's message names a log in it."""
    if settings.engine_log_dir is not None:
        return
    from llmhost.engines.upstream.engine import default_log_dir

    shutil.rmtree(default_log_dir(), ignore_errors=True)
