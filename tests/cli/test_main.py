"""The `llmhost` command itself: --version, help that fits 80 columns, settings errors a user can act on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from llmhost.config import Settings


def llmhost(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_version():
    r = llmhost("--version")
    assert r.returncode == 0 and r.stdout == f"llmhost {version('llmhost')}\n"


def test_serve_help_at_80_columns_shows_every_flag_whole_and_its_default():
    r = llmhost("serve", "--help", env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", r.stdout))
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in flags, name
    text = " ".join(r.stdout.split())  # help wraps lines
    for shown in (
        "[default: 8000; env: LLMHOST_PORT]",
        "[default: 127.0.0.1; env: LLMHOST_HOST]",
        "[default: llama.cpp; env: LLMHOST_ENGINE]",
        "[default: on; env: LLMHOST_FLASH_ATTN]",
        "[default: off; env: LLMHOST_BATCH_MODE]",
        "--reasoning-parser [qwen3|deepseek_r1]",
    ):
        assert shown in text, shown
    assert not re.search(r"--[a-z-]+…", r.stdout)  # rich's table cut them: --served-model-na…


def bad_settings(*args: str, env: dict[str, str] | None = None) -> list[str]:
    r = llmhost("serve", *args, env=env)
    assert r.returncode == 1, r.stderr  # a start-up failure, as every other
    assert "pydantic" not in r.stderr and "validation error" not in r.stderr and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), r.stderr
    return lines


def test_config_file_typos_get_a_did_you_mean_one_line_each(tmp_path):
    config = tmp_path / "llmhost.yaml"
    config.write_text("max_num_seq: 4\nmax-model-len: 512\nport: abc\ncolour: blue\n")
    assert sorted(bad_settings("--config", str(config))) == [
        f"error: invalid port 'abc' (from {config}): input should be a valid integer, unable to parse string "
        "as an integer",
        f"error: unknown key colour in {config}: not a setting; `llmhost serve --help` lists them "
        "(a key is a flag name with _ for -)",
        f"error: unknown key max-model-len in {config}: did you mean max_model_len?",
        f"error: unknown key max_num_seq in {config}: did you mean max_num_seqs?",
    ]


def test_flag_and_environment_errors_name_their_source():
    lines = bad_settings("--port", "99999", "--gpu", "x", env={"LLMHOST_FLASH_ATTN": "maybe"})
    assert lines == [
        "error: invalid port 99999 (from --port): input should be less than or equal to 65535",
        "error: invalid flash_attn 'maybe' (from LLMHOST_FLASH_ATTN): input should be a valid boolean, "
        "unable to interpret input",
        "error: invalid gpu 'x' (from --gpu): not an accepted value; `llmhost serve --help` describes --gpu",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("port: [1\n", "is not valid YAML at line 2, column 1: expected ',' or ']'"),
        ("- port\n- 8001\n", "must be a mapping of setting keys to values (e.g. `port: 8001`), not a list"),
    ],
)
def test_a_malformed_config_file_is_one_line(tmp_path, content, message):
    config = tmp_path / "llmhost.yaml"
    config.write_text(content)
    (line,) = bad_settings("--config", str(config))
    assert line.startswith(f"error: config file {config} {message}")
    assert bad_settings("--config", str(tmp_path / "missing.yaml")) == [
        f"error: config file not found: {tmp_path / 'missing.yaml'}"
    ]
