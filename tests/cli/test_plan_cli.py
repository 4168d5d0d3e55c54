"""`llmhost plan` as a user runs it: a subprocess; exit 0 fits, 1 not as asked, 2 bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.cli.plan import parse_gpus


def llmhost_plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", "plan", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "120"},
    )


def test_fits_exit_0_json() -> None:
    r = llmhost_plan("Qwen/Qwen2.5-32B-Instruct-AWQ", "--gpus", "2x24GiB", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["fits"] is True and plan["verdict"] == "fits"
    assert plan["tensor_parallel_size"] == 2 and plan["kv_bytes_per_token"] == 131_072
    assert plan["max_fitting_len"] == 32768 and plan["num_full_sequences"] >= 1
    for key in ("weight_bytes", "overhead_bytes", "overhead_basis", "budget_bytes", "kv_tokens"):
        assert key in plan


def test_does_not_fit_exit_1_with_alternatives() -> None:
    r = llmhost_plan("Qwen2.5-32B-Instruct", "--gpus", "2x24GiB", "--json")
    assert r.returncode == 1, r.stderr
    plan = json.loads(r.stdout)
    assert plan["verdict"] == "does not fit" and plan["fits"] is False
    assert plan["alternatives"]


def test_shorter_context_exit_1_and_table_output() -> None:
    r = llmhost_plan("Llama-3.1-8B-Instruct", "--gpus", "1x24GiB")
    assert r.returncode == 1, r.stderr
    assert "fits only with a shorter context" in r.stdout
    assert "estimated maximum model length" in r.stdout
    assert "runtime overhead" in r.stdout


def test_model_folder(tmp_path: Path) -> None:
    config = {
        "num_hidden_layers": 24,
        "hidden_size": 896,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "intermediate_size": 4864,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    r = llmhost_plan(str(tmp_path), "--gpus", "24GiB", "--json", "--max-model-len", "8192")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kv_bytes_per_token"] == 12 * 1024


@pytest.mark.parametrize(
    "args, message",
    [
        (["Qwen2.5-7B", "--gpus", "2x24"], "COUNTxSIZE"),
        (["Qwen2.5-7B", "--gpus", "two GPUs"], "COUNTxSIZE"),
        (["Qwen2.5-0.5B", "--gpus", "4x24GiB", "--tensor-parallel-size", "4"], "must divide"),
        (["Qwen2.5-7B", "--gpus", "1x24GiB", "--tensor-parallel-size", "2"], "needs 1..1"),
        (["no-such-model-xyz", "--gpus", "1x24GiB"], "catalogue"),
        (["Qwen2.5-7B", "--gpus", "1x24GiB", "--quantization", "int3"], "unknown quantization"),
    ],
)
def test_bad_input_exit_2(args: list[str], message: str) -> None:
    r = llmhost_plan(*args)
    assert r.returncode == 2
    assert message in " ".join(r.stderr.split())  # rich may wrap the message


def test_parse_gpus() -> None:
    assert parse_gpus("2x24GiB") == (2, 24 * 1024**3)
    assert parse_gpus("80GB") == (1, 80 * 10**9)
    assert parse_gpus("4 × 22.5 gib") == (4, int(22.5 * 1024**3))
