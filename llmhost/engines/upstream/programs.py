"""What a supervised llama.cpp server needs before it is launched, checked at engine creation so that a
missing piece is one clear error naming the fix, not a child that dies in its log.

`--engine llama-server`: llama.cpp's native `llama-server` binary, found through `LLMHOST_LLAMA_SERVER`,
then PATH, then the checkout's `.llama-server/bin/llama-server` (built by `make llama-server`).
`--engine llama-cpp-python`: llama-cpp-python's `python -m llama_cpp.server`, whose own dependencies
(the `llama-cpp-python[server]` extra) must be importable in the interpreter that runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from llmhost.errors import ModelLoadError

if TYPE_CHECKING:
    from .commands import LaunchSpec

LLAMA_SERVER_ENV = "LLMHOST_LLAMA_SERVER"
# llmhost/engines/upstream/programs.py -> the checkout's root, where `make llama-server` builds.
PROJECT_BUILD = Path(__file__).resolve().parents[3] / ".llama-server"
PROJECT_LLAMA_SERVER = PROJECT_BUILD / "bin" / "llama-server"
BUILD_FAILED = PROJECT_BUILD / "build.failed"  # scripts/build-llama-server.sh leaves its reason here

# Top-level modules `python -m llama_cpp.server` imports (llama-cpp-python's `server` extra and itself).
PYTHON_SERVER_MODULES = (
    "llama_cpp",
    "starlette_context",
    "sse_starlette",
    "pydantic_settings",
    "fastapi",
    "uvicorn",
)


def _is_executable(path: str | Path) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_llama_server(env: Mapping[str, str] = os.environ) -> str | None:
    """The native `llama-server` to run: `LLMHOST_LLAMA_SERVER`, else PATH, else the checkout's build.
    A set variable that names no executable is an error (it was meant, so it is not skipped)."""
    given = env.get(LLAMA_SERVER_ENV)
    if given:
        if not _is_executable(given):
            raise ModelLoadError(
                f"{LLAMA_SERVER_ENV}={given} is not an executable file (it names the llama-server binary "
                "--engine llama-server runs; unset it to use PATH or the one `make llama-server` builds)"
            )
        return given
    on_path = shutil.which("llama-server", path=env.get("PATH"))
    if on_path:
        return on_path
    return str(PROJECT_LLAMA_SERVER) if _is_executable(PROJECT_LLAMA_SERVER) else None


def prepare_llama_server(spec: LaunchSpec) -> LaunchSpec:
    """The spec with the native binary's path; none found is an error naming how to get one."""
    program = find_llama_server()
    if program is None:
        failed = BUILD_FAILED.read_text().strip() if BUILD_FAILED.is_file() else ""
        raise ModelLoadError(
            "--engine llama-server runs llama.cpp's native llama-server binary, and none was found: "
            "build it with `make llama-server` (scripts/build-llama-server.sh, into .llama-server/bin), or "
            f"put one on PATH or name it in {LLAMA_SERVER_ENV}"
            + (f" (the last build failed: {failed})" if failed else "")
            + ". The Python server that --engine llama-server launched before is now --engine "
            "llama-cpp-python."
        )
    return replace(spec, program=program)


def missing_modules(python: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` `python` cannot import (found without importing them, so it is quick)."""
    code = (
        "import importlib.util, sys\n"
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    )
    try:
        done = subprocess.run(
            [python, "-c", code, *modules], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelLoadError(f"cannot run the engine's Python {python}: {exc}") from None
    if done.returncode != 0:
        raise ModelLoadError(f"{python} failed to check its modules: {done.stderr.strip()[-500:]}")
    return done.stdout.split()


def prepare_llama_cpp_python(spec: LaunchSpec) -> LaunchSpec:
    """The spec as it is, once the server's modules are known to import in `spec.python`."""
    missing = missing_modules(spec.python, PYTHON_SERVER_MODULES)
    if not missing:
        return spec
    if Path(spec.python).resolve() == Path(sys.executable).resolve():
        fix = (
            "pip install 'llmhost[llama-cpp-python]' (from a checkout: .venv/bin/pip install -e "
            "'.[llama-cpp-python]')"
        )
    else:
        fix = f"{spec.python} -m pip install 'llama-cpp-python[server]'"
    raise ModelLoadError(
        f"--engine llama-cpp-python runs `python -m llama_cpp.server`, which needs {', '.join(missing)} "
        f"in {spec.python}: {fix}"
    )
