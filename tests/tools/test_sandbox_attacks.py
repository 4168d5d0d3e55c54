"""Programs that attack the sandbox (issue 5's list): each must fail safely and leave nothing running.

Run in the strongest mode that works here (`bwrap` where bubblewrap works; see test_sandbox.py), and the
attacks that the seccomp filter stops are also run in `rlimits` mode, which has no namespaces.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from llmhost.tools.sandbox import Limits, Sandbox
from llmhost.tools.seccomp import DENIED_SYSCALLS, build_filter
from tests.tools.test_sandbox import MODE, PeakRunning, needs_bwrap

UID_BASE = 1_990_000
IS_ROOT = os.geteuid() == 0
FILTERED_MODES = ["rlimits", MODE] if MODE != "rlimits" else ["rlimits"]


def make(mode: str = MODE, *, max_concurrency: int = 4, **limits: object) -> Sandbox:
    return Sandbox(
        mode,  # type: ignore[arg-type]
        Limits(**{"timeout_s": 3.0, **limits}),  # type: ignore[arg-type]
        max_concurrency=max_concurrency,
        uid_base=UID_BASE,
    )


def sandbox_processes() -> list[str]:
    """Processes a sandboxed program left behind: its slot uids (as root), or its program path."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, StopIteration):
            continue
        if UID_BASE <= uid < UID_BASE + 64 or b"/code/main.py" in cmdline or b"llmhost-sandbox-" in cmdline:
            found.append(f"{pid}: {cmdline[:80]!r}")
    return found


@pytest.fixture(autouse=True)
async def nothing_left_running():
    yield
    for _ in range(50):  # a killed process group may take a moment to be reaped
        if not sandbox_processes():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"left running: {sandbox_processes()}")


@pytest.mark.skipif(not IS_ROOT, reason="RLIMIT_NPROC only binds a non-root server's own uid")
async def test_fork_bomb_is_capped_and_killed():
    code = (
        "import os\nn = 0\nwhile True:\n    try:\n        os.fork()\n        n += 1\n"
        "    except OSError:\n        pass"
    )
    result = await make(timeout_s=2.0, processes=32).run(code)
    assert result.timed_out


async def test_thread_bomb_fails_inside_the_program():
    code = "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()"
    result = await make(processes=64).run(code)
    assert result.exit_code != 0
    assert "can't start new thread" in result.stderr or result.timed_out


async def test_memory_bomb_gets_memory_error():
    at_once = await make().run("x = bytearray(8 << 30)")
    assert at_once.exit_code == 1 and "MemoryError" in at_once.stderr
    # Growing in steps: stopped by the address-space limit, not by the deadline.
    grow = "chunks = []\nwhile True:\n    chunks.append(b'x' * (128 << 20))"
    stepwise = await make(timeout_s=30.0).run(grow)
    assert stepwise.exit_code == 1 and "MemoryError" in stepwise.stderr


async def test_a_process_ignoring_sigterm_is_killed_at_the_deadline():
    code = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass"
    result = await make(timeout_s=1.0).run(code)
    assert result.timed_out and result.exit_code is not None and result.exit_code < 0


async def test_segfault_is_a_result():
    result = await make().run("import ctypes\nctypes.string_at(0)")
    assert result.exit_code == -11 and not result.timed_out


@needs_bwrap
async def test_no_server_files_or_environment_are_visible(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHOST_FAKE_SECRET", "hunter2")
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's secret")
    for path in (str(secret), "/etc/passwd", os.path.abspath(__file__), f"/proc/{os.getpid()}/environ"):
        result = await make().run(f"print(open({path!r}).read())")
        assert result.exit_code == 1 and "Error" in result.stderr, (path, result)
        assert "hunter2" not in result.stdout and "secret" not in result.stdout
    result = await make().run("import os\nprint(os.listdir('/proc'))")
    assert str(os.getpid()) not in result.stdout  # its own pid namespace


@needs_bwrap
async def test_writes_outside_the_work_dir_are_refused():
    code = (
        "open('note.txt', 'w').write('ok')\nprint(open('note.txt').read())\n"
        "for p in ('/usr/evil', '/evil', '/code/evil', '/etc/evil'):\n"
        "    try:\n        open(p, 'w')\n        print('wrote', p)\n"
        "    except OSError as e:\n        print('denied', e.errno)"
    )
    result = await make().run(code)
    assert result.stdout.splitlines()[0] == "ok" and "wrote" not in result.stdout, result


@needs_bwrap
async def test_filling_the_tmpfs_stops_at_its_size():
    code = (
        "import errno\nblock = b'x' * (1 << 20)\nwritten = 0\ntry:\n"
        "    with open('/tmp/fill', 'wb') as f:\n        while True:\n            f.write(block)\n"
        "            f.flush()\n            written += 1\n"
        "except OSError as e:\n    print('stopped', errno.errorcode[e.errno], written)"
    )
    result = await make(tmpfs_bytes=8 << 20, file_size_bytes=64 << 20).run(code)
    assert result.stdout.startswith("stopped ENOSPC"), result
    assert int(result.stdout.split()[2]) <= 8


@pytest.mark.parametrize("mode", FILTERED_MODES)
async def test_tcp_to_a_host_listener_never_connects(mode):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = (
            "import socket\ntry:\n"
            f"    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('connected')\nexcept OSError as e:\n    print('failed', e.errno)"
        )
        result = await make(mode).run(code)
        assert result.stdout.startswith("failed"), result
        with pytest.raises(BlockingIOError):
            listener.accept()  # the listener saw 0 connections


@pytest.mark.parametrize("mode", FILTERED_MODES)
async def test_dns_and_raw_sockets_fail(mode):
    code = (
        "import socket\nfor family, kind in ((socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_INET6, "
        "socket.SOCK_STREAM), (socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_PACKET, socket.SOCK_RAW)):\n"
        "    try:\n        socket.socket(family, kind)\n        print('opened', family)\n"
        "    except OSError as e:\n        print('refused', e.errno)\n"
        "try:\n    print(socket.getaddrinfo('example.com', 80))\n"
        "except OSError as e:\n    print('dns failed')"
    )
    result = await make(mode).run(code)
    assert "opened" not in result.stdout and "dns failed" in result.stdout, result
    assert result.stdout.count("refused 97") == 4  # EAFNOSUPPORT from the seccomp filter


@pytest.mark.parametrize("mode", FILTERED_MODES)
async def test_ctypes_ptrace_unshare_mount_are_denied(mode):
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "calls = {'ptrace': lambda: libc.ptrace(16, os.getppid(), 0, 0),\n"
        "         'unshare': lambda: libc.unshare(0x10000000),\n"
        "         'mount': lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None),\n"
        "         'setns': lambda: libc.setns(0, 0)}\n"
        "for name, call in calls.items():\n    print(name, call(), ctypes.get_errno())"
    )
    result = await make(mode).run(code)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines == {name: "-1 1" for name in ("ptrace", "unshare", "mount", "setns")}, result


async def test_a_detached_background_process_does_not_outlive_the_call():
    code = "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)\nprint('started')"
    result = await make().run(code)
    assert result.stdout == "started\n" and not result.timed_out
    # The autouse fixture checks that nothing of it is left (pid namespace / process group kill).


async def test_sixteen_bombs_at_once_respect_the_cap_and_a_harmless_call_finishes():
    sandbox = make(max_concurrency=2, timeout_s=1.0)
    await sandbox.probe()
    bombs = [
        "while True:\n    pass",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))",
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    ]
    async with PeakRunning(sandbox) as running:
        runs = [asyncio.create_task(sandbox.run(bombs[i % len(bombs)])) for i in range(16)]
        harmless = await asyncio.wait_for(sandbox.run("print('still fine')"), timeout=120)
        results = await asyncio.gather(*runs)
    assert harmless.stdout == "still fine\n"
    assert running.peak <= 2 and len(results) == 16
    assert sandbox.outcomes["timeout"] + sandbox.outcomes["error"] == 16


def test_the_filter_denies_what_the_docs_say():
    program = build_filter("x86_64")
    assert program is not None and len(program) % 8 == 0 and len(program) // 8 < 4096
    assert build_filter("aarch64") is None  # no table there: the sandbox says so instead of guessing
    assert {"ptrace", "mount", "unshare", "setns", "bpf", "io_uring_setup"} <= set(DENIED_SYSCALLS)


async def test_each_program_runs_under_its_own_uid_when_the_server_is_root():
    result = await make().run("import os\nprint(os.getuid(), os.getgid(), os.getgroups())")
    if IS_ROOT and MODE == "bwrap":
        uid, gid, groups = result.stdout.split(" ", 2)
        assert UID_BASE <= int(uid) < UID_BASE + 4 and uid == gid and groups.strip() == "[]"
    else:
        assert not result.stdout.startswith("0 ")  # never root inside
