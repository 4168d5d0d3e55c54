"""How a sandboxed program is started: the bubblewrap command line and the launcher that runs inside.

`Sandbox` (sandbox.py) decides what runs and when; this module only builds argv. The launcher is a
short script run by the real interpreter (not the venv's symlink) with `-I`: it sets the rlimits,
installs the seccomp filter (seccomp.py), drops to the slot's uid when given one, then runs the program
in the same interpreter as a fresh `__main__` — one interpreter start-up per run instead of two (the
start-up is most of a short run's time) — with its own frame cut from tracebacks, so the model sees
what `python main.py` would print.
"""

from __future__ import annotations

import contextlib
import os
import sys

from llmhost.tools.seccomp import INSTALL_SNIPPET

# argv: the program path, five limit values (0: none), the filter as hex and the uid ("-": none).
LAUNCHER = (
    INSTALL_SNIPPET
    + """\
import os, resource, sys
path, as_, cpu, fsize, nofile, nproc = sys.argv[1], *map(int, sys.argv[2:7])
for what, soft, hard in ((resource.RLIMIT_AS, as_, as_), (resource.RLIMIT_CPU, cpu, cpu + 1),
                         (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NOFILE, nofile, nofile),
                         (resource.RLIMIT_NPROC, nproc, nproc), (resource.RLIMIT_CORE, 0, 0)):
    if soft > 0:
        resource.setrlimit(what, (soft, hard))
if sys.argv[7] != "-":
    install_seccomp(sys.argv[7])
if sys.argv[8] != "-":
    uid = int(sys.argv[8])
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)  # drops every capability bwrap left
import traceback, types
with open(path, "rb") as f:
    source = f.read()
try:
    program = compile(source, path, "exec", dont_inherit=True)
except (SyntaxError, ValueError) as error:
    traceback.print_exception(type(error), error, None)  # as python prints a script that does not parse
    sys.exit(1)
main = types.ModuleType("__main__")
main.__file__ = path
sys.modules["__main__"] = main
sys.argv[:] = [path]
sys.path[0] = os.path.dirname(path)
del as_, cpu, fsize, nofile, nproc, what, soft, hard, f, source
try:
    exec(program, main.__dict__)
except SystemExit:
    raise
except BaseException as error:
    traceback.print_exception(type(error), error, error.__traceback__.tb_next)
    sys.exit(1)
"""
)

ALLOWED_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "LANG": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OMP_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}


def interpreter() -> tuple[str, str]:
    """The real interpreter binary (not a venv symlink) and the prefix it needs to start."""
    return os.path.realpath(sys.executable), sys.base_prefix


def reachable_by_others(path: str) -> bool:
    """Whether every directory down to `path` lets any uid pass (o+x)."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        with contextlib.suppress(OSError):
            if not os.stat(os.sep.join(parts[:i])).st_mode & 0o001:
                return False
    return True


def launcher_argv(
    program: str, limits: list[int] | None, seccomp_hex: str | None, uid: int | None
) -> list[str]:
    """The interpreter running LAUNCHER on `program`; `limits` None sets none (mode `off`)."""
    exe, _ = interpreter()
    values = limits if limits is not None else [0, 0, 0, 0, 0]
    uid_arg = "-" if uid is None else str(uid)
    return [exe, "-I", "-c", LAUNCHER, program, *map(str, values), seccomp_hex or "-", uid_arg]


def bwrap_argv(bwrap: str, code_dir: str, tmpfs_bytes: int, *, privileged: bool) -> list[str]:
    """bubblewrap around the launcher: new pid/net/ipc/uts namespaces, read-only /usr and interpreter,
    size-limited tmpfs `/work` and `/tmp`, the program's folder read-only at `/code`, an allow-listed
    environment. `privileged` (llmhost runs as root): no user namespace — an unprivileged bwrap could
    not bind an interpreter under root's 0700 home — and only CAP_SETUID/CAP_SETGID kept, for the
    launcher to drop to the slot's uid."""
    exe, prefix = interpreter()
    if privileged:
        argv = [
            bwrap,
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
        ]  # fmt: skip
    else:
        argv = [
            bwrap,
            "--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000", "--cap-drop", "ALL",
        ]  # fmt: skip
    argv += [
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/lib", "/lib",
    ]  # fmt: skip
    if os.path.isdir("/usr/lib64"):
        argv += ["--symlink", "usr/lib64", "/lib64"]
    for path in (prefix, exe):
        if path.startswith("/usr/") or (path == exe and exe.startswith(prefix + "/")):
            continue
        # Directories bwrap creates on the way would be 0700 for a program that dropped root.
        parts = path.split("/")[1:-1]
        for i in range(1, len(parts) + 1):
            argv += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i])]
        argv += ["--ro-bind", path, path]
    size = str(tmpfs_bytes)
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
        "--perms", "1777", "--size", size, "--tmpfs", "/work",
        "--ro-bind", code_dir, "/code",
        "--chdir", "/work",
        "--remount-ro", "/",
    ]  # fmt: skip
    for key, value in ALLOWED_ENV.items():
        argv += ["--setenv", key, value]
    return argv
