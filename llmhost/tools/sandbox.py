"""Run untrusted Python in a child process and return what it did, without trusting it.

Isolation comes in layers, chosen once by `Sandbox.probe()`:

- `bwrap` (preferred): bubblewrap puts the child in new user/pid/net/ipc/uts/mount namespaces. It sees
  only `/usr` and the interpreter's prefix (read-only), a size-limited tmpfs as `/work` and `/tmp`, the
  program file (read-only), no network but its own loopback, and an environment built from an allow-list
  (never the server's). `--die-with-parent` and the pid namespace take every descendant down with it.
- `rlimits`: a plain child in its own session with rlimits and a cleared environment. It can read what
  the server's user can read and reach the network, and a grandchild that calls `setsid()` escapes the
  process-group kill: only for operators who chose it explicitly.
- `off`: no limits beyond the deadline, output cap and cleared environment (trusted code only).

In every mode a small launcher (`launch.py`) sets rlimits inside the child — address space, CPU seconds
(soft < hard, so the program first gets SIGXCPU), file size, open files, processes, no core files — and
then `exec`s the interpreter on the program; the parent enforces a wall-clock deadline by SIGKILLing the
whole process group, caps the output (marked truncated) and gives the child no stdin.

In `bwrap` and `rlimits` modes the launcher also installs a seccomp filter (`llmhost/tools/seccomp.py`:
no sockets but AF_UNIX, no ptrace, mount, namespaces, bpf, io_uring, …), so `rlimits` has no network either.

When the server runs as root, every execution runs under its own unprivileged uid (one per concurrency
slot, `uid_base + slot`, no supplementary groups, no capabilities): the kernel ignores RLIMIT_NPROC for
uid 0, and with a uid of its own a program's process limit counts only its own processes (a fork bomb
stops at `Limits.processes`). bwrap then runs privileged (no user namespace: an unprivileged bwrap could
not bind an interpreter under root's 0700 home) and keeps only CAP_SETUID/CAP_SETGID for the launcher,
which drops to the slot's uid after the rlimits and the filter, just before `exec`. In `rlimits` mode the
switch happens only when that uid can reach the interpreter.

`auto` refuses to run code (`SandboxUnavailable`) when bubblewrap does not work here; it never falls back
to weaker isolation silently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Literal

from llmhost.errors import SandboxBusy, SandboxUnavailable
from llmhost.tools.launch import ALLOWED_ENV, bwrap_argv, interpreter, launcher_argv, reachable_by_others
from llmhost.tools.seccomp import build_filter

log = logging.getLogger("llmhost.sandbox")

SandboxMode = Literal["auto", "bwrap", "rlimits", "off"]
ActiveMode = Literal["bwrap", "rlimits", "off", "unavailable"]


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    max_output_bytes: int = 64 * 1024
    address_space_bytes: int = 1024 * 1024 * 1024
    file_size_bytes: int = 16 * 1024 * 1024
    open_files: int = 64
    processes: int = 64  # not enforced for a real root uid (the kernel ignores RLIMIT_NPROC for root)
    tmpfs_bytes: int = 64 * 1024 * 1024


@dataclass
class ExecutionResult:
    stdout: str
    stderr: str
    exit_code: int | None  # negative: killed by that signal (bwrap's 128+N is mapped back to -N)
    timed_out: bool
    truncated: bool
    duration_s: float
    mode: ActiveMode

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def outcome(self) -> str:
        """`ok`, `error` (non-zero exit or a signal), `timeout` or `truncated`: the metrics label."""
        if self.timed_out:
            return "timeout"
        if self.truncated:
            return "truncated"
        return "ok" if self.exit_code == 0 else "error"


class Sandbox:
    """Runs programs one child each; at most `max_concurrency` at once, `max_queue` more waiting."""

    def __init__(
        self,
        mode: SandboxMode = "auto",
        limits: Limits | None = None,
        *,
        max_concurrency: int = 4,
        max_queue: int | None = None,
        uid_base: int = 1_990_000,
    ) -> None:
        self.requested_mode: SandboxMode = mode
        self.limits = limits or Limits()
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue if max_queue is not None else 1024
        self.mode: ActiveMode | None = None  # set by probe()
        self.unavailable_reason = ""
        self._slots = asyncio.Semaphore(max_concurrency)
        self._waiting = 0
        self.num_running = 0
        self._bwrap = shutil.which("bwrap")
        self._probing = asyncio.Lock()  # concurrent first calls share one probe
        seccomp_filter = build_filter()
        self._filter_hex = seccomp_filter.hex() if seccomp_filter else "-"
        # One uid per concurrency slot, only when we could switch to it (see the module docstring).
        self._is_root = os.geteuid() == 0
        self._free_uids = list(range(uid_base, uid_base + max_concurrency)) if self._is_root else []
        self.outcomes: collections.Counter[str] = collections.Counter()  # executions by outcome

    @property
    def seccomp(self) -> bool:
        """Whether programs run under the seccomp filter (every mode but `off`, on x86_64)."""
        return self._filter_hex != "-" and self.mode in ("bwrap", "rlimits")

    async def probe(self) -> ActiveMode:
        """Pick the active mode once (idempotent) and log it."""
        if self.mode is not None:
            return self.mode
        async with self._probing:
            if self.mode is None:
                await self._choose_mode()
        assert self.mode is not None
        return self.mode

    async def _choose_mode(self) -> None:
        if self.requested_mode in ("rlimits", "off"):
            self.mode = self.requested_mode
            if self._free_uids and (self.mode == "off" or not reachable_by_others(interpreter()[1])):
                log.warning("sandbox: programs run as root (the interpreter is not reachable by another uid)")
                self._free_uids = []
            log.warning(
                "sandbox mode: %s (chosen explicitly; code is NOT isolated from this host)", self.mode
            )
            return
        reason = await self._probe_bwrap()
        if reason is None:
            self.mode = "bwrap"
            log.info(
                "sandbox mode: bwrap (namespaces, read-only /usr, tmpfs work dir, no network, seccomp %s%s)",
                "on" if self._filter_hex != "-" else "unavailable on this architecture",
                ", a uid per slot" if self._free_uids else "",
            )
        else:
            self.mode = "unavailable"
            self.unavailable_reason = (
                f"code execution is disabled: bubblewrap isolation does not work here ({reason}); "
                "install bubblewrap or choose --sandbox rlimits|off explicitly"
            )
            log.error("sandbox mode: unavailable (--sandbox %s): %s", self.requested_mode, reason)

    async def _probe_bwrap(self) -> str | None:
        if self._bwrap is None:
            return "`bwrap` is not installed"
        uid = self._free_uids[0] if self._free_uids else None
        with tempfile.TemporaryDirectory(prefix="llmhost-probe-") as tmp:
            os.chmod(tmp, 0o755)
            path = os.path.join(tmp, "main.py")
            with open(path, "w") as f:
                f.write("print('ok')\n")
            os.chmod(path, 0o644)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._bwrap_argv(tmp),
                    *self._launcher_argv("/code/main.py", uid, seccomp=True),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env={},
                    start_new_session=True,
                )
                out, err = await asyncio.wait_for(proc.communicate(), timeout=15)
            except (OSError, TimeoutError) as exc:
                return f"probe failed: {exc!r}"
        if proc.returncode != 0 or out.strip() != b"ok":
            return err.decode(errors="replace").strip()[:300] or f"probe exited with {proc.returncode}"
        return None

    def _bwrap_argv(self, code_dir: str) -> list[str]:
        return bwrap_argv(self._bwrap or "bwrap", code_dir, self.limits.tmpfs_bytes, privileged=self._is_root)

    def _launcher_argv(self, program: str, uid: int | None, *, seccomp: bool | None = None) -> list[str]:
        lim = self.limits
        values = None
        if self.mode != "off":
            cpu = int(lim.timeout_s) + 1
            values = [lim.address_space_bytes, cpu, lim.file_size_bytes, lim.open_files, lim.processes]
        use_filter = self.seccomp if seccomp is None else seccomp
        return launcher_argv(program, values, self._filter_hex if use_filter else None, uid)

    def admit(self, num_runs: int) -> None:
        """Refuse (`SandboxBusy`) `num_runs` executions at once unless they all fit in the free slots
        plus the queue, so a batch is taken whole or not at all. (Two batches admitted in the same loop
        tick, before either has started waiting, may overshoot the queue by one batch.)"""
        if self.num_running + self._waiting + num_runs > self.max_concurrency + self.max_queue:
            self.outcomes["busy"] += num_runs
            raise SandboxBusy()

    async def run(self, code: str, *, is_admitted: bool = False) -> ExecutionResult:
        """Run `code` as a program; raises `SandboxUnavailable` or `SandboxBusy` (unless `admit` already
        took it), never the program's own failures (those are in the result)."""
        mode = await self.probe()
        if mode == "unavailable":
            self.outcomes["unavailable"] += 1
            raise SandboxUnavailable(self.unavailable_reason)
        if not is_admitted:
            self.admit(1)
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self.num_running += 1
        uid = self._free_uids.pop() if self._free_uids else None
        try:
            result = await self._run_one(code, mode, uid)
        finally:
            if uid is not None:
                self._free_uids.append(uid)
            self.num_running -= 1
            self._slots.release()
        self.outcomes[result.outcome] += 1
        return result

    async def _run_one(self, code: str, mode: ActiveMode, uid: int | None) -> ExecutionResult:
        lim = self.limits
        with tempfile.TemporaryDirectory(prefix="llmhost-sandbox-") as tmp:
            os.chmod(tmp, 0o711)  # the program's uid may pass through, not list
            code_dir = os.path.join(tmp, "code")
            os.mkdir(code_dir)
            os.chmod(code_dir, 0o755)
            program = os.path.join(code_dir, "main.py")
            with open(program, "w", encoding="utf-8") as f:
                f.write(code)
            os.chmod(program, 0o644)
            if mode == "bwrap":
                argv = self._bwrap_argv(code_dir) + self._launcher_argv("/code/main.py", uid)
                cwd, env = None, {}
            else:
                work = os.path.join(tmp, "work")
                os.mkdir(work)
                if uid is not None:
                    os.chown(work, uid, uid)
                argv = self._launcher_argv(program, uid)
                cwd, env = work, {**ALLOWED_ENV, "HOME": work}
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,  # its own process group: one killpg takes every descendant
            )
            budget = _OutputBudget(lim.max_output_bytes)
            readers = [
                asyncio.create_task(budget.read(proc.stdout, "stdout", lambda: _kill_group(proc))),
                asyncio.create_task(budget.read(proc.stderr, "stderr", lambda: _kill_group(proc))),
            ]
            timed_out = False
            try:
                timed_out = not await _exited_by(proc, started + lim.timeout_s)
            finally:
                _kill_group(proc)  # on timeout, and leftovers that left the program but not its group
                # A grandchild that left the group may still hold the pipes: stop reading shortly after.
                _, pending = await asyncio.wait(readers, timeout=0.5)
                for task in pending:
                    task.cancel()
                if pending:
                    transport = getattr(proc, "_transport", None)
                    if transport is not None:
                        transport.close()
                await proc.wait()
            duration = time.monotonic() - started
        code_ = proc.returncode
        if mode == "bwrap" and code_ is not None and code_ > 128:
            code_ = -(code_ - 128)  # bwrap reports the program's death by signal N as 128+N
        return ExecutionResult(
            stdout=budget.text("stdout"),
            stderr=budget.text("stderr"),
            exit_code=code_,
            timed_out=timed_out,
            truncated=budget.truncated,
            duration_s=round(duration, 4),
            mode=mode,
        )


class _OutputBudget:
    """Both pipes share one byte budget; past it the program is killed and the result marked truncated."""

    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes
        self.truncated = False
        self.chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

    async def read(self, stream: asyncio.StreamReader | None, name: str, on_full: object) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            if self.truncated:
                continue
            if len(chunk) > self.left:
                self.chunks[name].append(chunk[: self.left])
                self.left = 0
                self.truncated = True
                on_full()  # type: ignore[operator]
                continue
            self.chunks[name].append(chunk)
            self.left -= len(chunk)

    def text(self, name: str) -> str:
        return b"".join(self.chunks[name]).decode("utf-8", errors="replace")


async def _exited_by(proc: asyncio.subprocess.Process, deadline: float) -> bool:
    """Whether the child exited before `deadline`. Polls the exit status rather than awaiting
    `proc.wait()`, which also waits for the pipes to close (a detached grandchild may hold them)."""
    while proc.returncode is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(0.005, left))
    return True


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
