"""The sandbox with real child processes: results, deadline, output cap, isolation, refusal, busy queue.

The isolation tests need bubblewrap that works on this machine (`make test` installs it where apt-get
can); without it they are skipped with the reason, and the rest run in `rlimits` mode.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from llmhost.tools.sandbox import Limits, Sandbox, SandboxBusy, SandboxUnavailable


def _bwrap_works() -> tuple[bool, str]:
    sandbox = Sandbox("auto")
    mode = asyncio.run(sandbox.probe())
    return mode == "bwrap", sandbox.unavailable_reason


BWRAP_WORKS, BWRAP_REASON = _bwrap_works()
MODE = "bwrap" if BWRAP_WORKS else "rlimits"  # the strongest mode that runs here
needs_bwrap = pytest.mark.skipif(not BWRAP_WORKS, reason=f"bubblewrap does not work here: {BWRAP_REASON}")


def make(mode: str = MODE, **limits: object) -> Sandbox:
    return Sandbox(mode, Limits(**{"timeout_s": 5.0, **limits}))  # type: ignore[arg-type]


def test_reports_the_mode_in_use():
    print(f"sandbox mode for these tests: {MODE}")
    assert asyncio.run(make().probe()) == MODE


async def test_stdout_stderr_and_exit_code():
    result = await make().run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 3)
    assert not result.timed_out and not result.truncated and result.mode == MODE
    assert result.duration_s < 5


async def test_exceptions_and_signals_are_results():
    failed = await make().run("1/0")
    assert failed.exit_code == 1 and "ZeroDivisionError" in failed.stderr
    crashed = await make().run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    assert crashed.exit_code == -11


async def test_stdin_is_empty():
    result = await make().run("import sys\nprint(repr(sys.stdin.read()))")
    assert result.stdout == "''\n"


async def test_infinite_loop_is_killed_at_the_deadline():
    started = time.monotonic()
    result = await make(timeout_s=1.0).run("while True:\n    pass")
    assert result.timed_out and result.exit_code is not None and result.exit_code < 0
    assert time.monotonic() - started < 4


async def test_sleep_past_the_deadline_is_killed():
    result = await make(timeout_s=0.5).run("import time\nprint('before', flush=True)\ntime.sleep(60)")
    assert result.timed_out and result.stdout == "before\n" and result.duration_s < 3


async def test_huge_output_is_truncated():
    started = time.monotonic()
    result = await make(max_output_bytes=1000).run("print('x' * 100_000_000)")
    assert result.truncated and len(result.stdout) == 1000
    assert time.monotonic() - started < 4


async def test_invalid_utf8_on_stderr_does_not_break_decoding():
    result = await make().run("import sys\nsys.stderr.buffer.write(b'\\xff\\xfe bad')")
    assert "bad" in result.stderr and "\ufffd" in result.stderr


async def test_environment_is_an_allow_list(monkeypatch):
    monkeypatch.setenv("LLMHOST_FAKE_SECRET", "hunter2")
    result = await make().run("import os\nprint(sorted(os.environ.items()))")
    assert "hunter2" not in result.stdout and "LLMHOST_FAKE_SECRET" not in result.stdout


async def test_auto_refuses_without_isolation(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)  # as on a machine without bubblewrap
    sandbox = Sandbox("auto")
    assert await sandbox.probe() == "unavailable"
    with pytest.raises(SandboxUnavailable, match="rlimits"):
        await sandbox.run("print(1)")


async def test_explicit_bwrap_without_bubblewrap_refuses_too(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(SandboxUnavailable):
        await Sandbox("bwrap").run("print(1)")


async def test_busy_queue_refuses_and_a_later_call_still_runs():
    sandbox = Sandbox(MODE, Limits(timeout_s=5.0), max_concurrency=1, max_queue=1)
    await sandbox.probe()
    slow = asyncio.create_task(sandbox.run("import time\ntime.sleep(0.6)"))
    queued = asyncio.create_task(sandbox.run("print('queued')"))
    await asyncio.sleep(0.1)  # both admitted: one runs, one waits
    assert sandbox.num_running == 1
    with pytest.raises(SandboxBusy):
        await sandbox.run("print('refused')")
    assert (await queued).stdout == "queued\n"
    await slow
    assert (await sandbox.run("print('later')")).stdout == "later\n"


class PeakRunning:
    """Samples `sandbox.num_running` every 10 ms while the block runs; `.peak` is the most seen."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox, self.peak = sandbox, 0

    async def _watch(self) -> None:
        while True:
            self.peak = max(self.peak, self.sandbox.num_running)
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> PeakRunning:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()


async def test_concurrency_is_capped():
    sandbox = Sandbox(MODE, Limits(timeout_s=5.0), max_concurrency=2)
    async with PeakRunning(sandbox) as running:
        results = await asyncio.gather(*(sandbox.run("import time\ntime.sleep(0.2)") for _ in range(6)))
    peak = running.peak
    assert all(r.exit_code == 0 for r in results) and peak == 2
