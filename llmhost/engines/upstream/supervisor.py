"""Launch one engine server as a child process, keep it alive, and stop it with its whole process group.

The child binds 127.0.0.1 on a free port and writes to its own log file. Start-up waits for its health
path with a deadline; when it dies later it is restarted with exponential backoff, and listeners hear
"down" (with the reason), "restarted" and "up". A vLLM start that fails because the KV cache does not
fit is retried once with the context vLLM says fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from llmhost.errors import ModelLoadError

from .commands import MEMORY_KNOBS, EngineKind, LaunchSpec, find_memory_failure, with_max_model_len

log = logging.getLogger("llmhost.upstream")

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_CHARS = 2000


class StartFailed(ModelLoadError):
    """The child did not become healthy; `log_text` is what it wrote during this attempt."""

    def __init__(self, message: str, log_text: str = "") -> None:
        super().__init__(message)
        self.log_text = log_text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: SIGTERM when llmhost dies, even by SIGKILL, so no engine outlives it."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env(spec: LaunchSpec) -> dict[str, str]:
    # llmhost's own settings (API keys among them) stay out of the child's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMHOST_")}
    if spec.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
    env.update(spec.env)
    return env


class Supervisor:
    """One supervised engine server. `base_url` is None while it is not serving."""

    def __init__(
        self,
        spec: LaunchSpec,
        kind: EngineKind,
        *,
        label: str,
        log_dir: Path,
        startup_timeout_s: float,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.spec = spec
        self.kind = kind
        self.label = label
        self.log_path = log_dir / f"{label}.log"
        self.startup_timeout_s = startup_timeout_s
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.base_url: str | None = None
        self.down_reason: str | None = "not started"
        self.restarts = 0
        self.in_flight = 0
        self.listeners: list[Callable[[str, Supervisor], None]] = []  # (event, self): down/restarted/up
        self._proc: subprocess.Popen | None = None
        self._watch_task: asyncio.Task | None = None
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- start-up ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Launch and wait until healthy; a failure raises `ModelLoadError` naming the cause."""
        self._closing = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._launch_healthy()
        except StartFailed as exc:
            failure = find_memory_failure(exc.log_text)
            if failure is None:
                raise ModelLoadError(exc.message) from None
            fits = failure.fitting_max_model_len
            asked = self.spec.max_model_len
            if fits is None or fits < 16 or (asked is not None and fits >= asked):
                raise ModelLoadError(
                    f"{self.label}: the KV cache does not fit in GPU memory ({failure.message}). "
                    f"To fix it: {MEMORY_KNOBS}. Log: {self.log_path}"
                ) from None
            log.warning(
                "!!! %s: the KV cache does not fit (%s); retrying ONCE with --max-model-len %d. "
                "Set --max-model-len yourself to silence this.",
                self.label,
                failure.message,
                fits,
            )
            self.spec = with_max_model_len(self.spec, fits)
            try:
                await self._launch_healthy()
            except StartFailed as again:
                raise ModelLoadError(
                    f"{again.message} (after retrying with --max-model-len {fits}). To fix it: {MEMORY_KNOBS}"
                ) from None
        self._watch_task = asyncio.create_task(self._watch(), name=f"supervise-{self.label}")

    async def _launch_healthy(self) -> None:
        """Spawn on a fresh port and wait for health; raises `StartFailed`."""
        port = free_port()
        argv = self.kind.build(self.spec, port)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            out.write(f"\n=== llmhost: starting {self.label}: {' '.join(argv)}\n".encode())
            out.flush()
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=child_env(self.spec),
                    start_new_session=True,  # its own process group: shutdown kills every worker too
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise StartFailed(f"{self.label}: cannot run {argv[0]}: {exc}") from None
        log.info("%s: started pid %d on port %d (log %s)", self.label, self._proc.pid, port, self.log_path)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.startup_timeout_s
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                if self._closing:
                    raise StartFailed(f"{self.label}: shut down while starting")
                code = self._proc.poll()
                if code is not None:
                    text = self._log_since(offset)
                    raise StartFailed(
                        f"{self.label} exited with code {code} before it was healthy; end of its log "
                        f"({self.log_path}):\n{text[-_LOG_TAIL_CHARS:]}",
                        text,
                    )
                if time.monotonic() > deadline:
                    self._kill()
                    text = self._log_since(offset)
                    raise StartFailed(
                        f"{self.label} was not healthy within {self.startup_timeout_s:g}s "
                        f"(--engine-startup-timeout); end of its log ({self.log_path}):\n"
                        f"{text[-_LOG_TAIL_CHARS:]}",
                        text,
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url + self.kind.health_path)).status_code == 200:
                        break
                await asyncio.sleep(0.25)
        self.base_url = url
        self.down_reason = None
        log.info("%s: healthy at %s", self.label, url)

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- keeping it alive --------------------------------------------------------------------------
    async def _watch(self) -> None:
        delay = self.first_backoff_s
        while not self._closing:
            proc = self._proc
            assert proc is not None
            code = await asyncio.to_thread(proc.wait)
            if self._closing:
                return
            # Its workers (vLLM's engine core) may outlive it, holding memory: sweep the whole group.
            self._signal(signal.SIGKILL)
            self.base_url = None
            self.down_reason = f"{self.label} exited with code {code}; restarting it"
            log.error("%s (log %s)", self.down_reason, self.log_path)
            self._emit("down")
            while not self._closing:
                self.restarts += 1
                self._emit("restarted")
                await asyncio.sleep(delay)
                try:
                    await self._launch_healthy()
                except ModelLoadError as exc:
                    delay = min(delay * 2, self.max_backoff_s)
                    self.down_reason = f"{self.label} failed to restart ({exc.message[:200]}); retrying"
                    log.error("%s in %.0fs", self.down_reason, delay)
                    continue
                delay = self.first_backoff_s
                log.warning("%s: back up after a restart (%d so far)", self.label, self.restarts)
                self._emit("up")
                break

    def _emit(self, event: str) -> None:
        for listener in self.listeners:
            try:
                listener(event, self)
            except Exception:  # a listener's bug must not stop supervision
                log.exception("supervisor listener failed")

    # -- shutdown ----------------------------------------------------------------------------------
    async def close(self, grace_s: float = 10.0) -> None:
        self._closing = True
        self.base_url = None
        self.down_reason = "stopped"
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), grace_s)
            except TimeoutError:
                log.warning("%s: no exit %gs after SIGTERM; killing its process group", self.label, grace_s)
                self._kill()
        if proc is not None:
            self._signal(signal.SIGKILL)  # workers that outlived their leader (the group id stays theirs)
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None

    def _kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)

    def _signal(self, sig: int) -> None:
        # By process group of the pid we started (start_new_session made it the group leader).
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)
