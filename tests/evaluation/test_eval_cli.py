"""`llmhost eval` as a user runs it (a subprocess against a real server, each --api) and its dataset rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.evaluation.runner import DatasetError, build_report, load_dataset
from tests.conftest import free_port

QA = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"prompt": "什么是共享内存？", "reference": "共享内存是线程块内线程共享的片上存储。"},
    {"question": "Name a primary colour.", "answer": "Red"},
]
ITEM_KEYS = {"line", "question", "reference", "answer", "score", "latency_s", "completion_tokens", "error"}


def write_qa(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)
    )
    return path


def llmhost_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", "eval", *args], capture_output=True, text=True, timeout=180
    )


# -- the dataset -----------------------------------------------------------------------------------
def test_dataset_accepts_both_key_spellings_and_skips_blank_lines(tmp_path):
    items = load_dataset(write_qa(tmp_path / "qa.jsonl", [QA[0], "", QA[1]]))
    assert [(i.line, i.question, i.reference) for i in items] == [
        (1, QA[0]["question"], "Paris"),
        (3, QA[1]["prompt"], QA[1]["reference"]),
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"answer": "x"}', "needs one of 'question' or 'prompt'"),
        ('{"question": "q"}', "needs one of 'answer' or 'reference'"),
        ('{"question": 3, "answer": "x"}', "'question' must be a string"),
    ],
)
def test_a_bad_line_is_named(tmp_path, row, message):
    path = write_qa(tmp_path / "qa.jsonl", [QA[0], row])
    with pytest.raises(DatasetError, match=f"qa.jsonl:2: {message}"):
        load_dataset(path)


def test_an_empty_dataset_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="no QA items"):
        load_dataset(write_qa(tmp_path / "qa.jsonl", ["", "  "]))


def test_the_report_warns_when_the_rouge_modes_disagree(tmp_path):
    from llmhost.evaluation.runner import _Answer

    items = load_dataset(write_qa(tmp_path / "qa.jsonl", [QA[1]]))
    report = build_report(
        "u",
        items,
        [_Answer(QA[1]["reference"])],
        2.0,
        api="predict-batch",
        metric="rougeL-jieba",
        threshold=0.35,
    )
    assert report.mean_score == 1.0 and report.passed
    assert report.other_means == {"rougeL-harness": 0.0}
    assert any("disagree" in w for w in report.warnings)
    assert report.chars_per_s == len(QA[1]["reference"]) / 2.0
    assert report.tokens_per_s is None  # /predict reports no usage


# -- the command against a real server -------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("api", ["predict", "predict-batch", "chat"])
def test_each_api_writes_a_full_report(server, tmp_path, api):
    data, out = write_qa(tmp_path / "qa.jsonl", QA), tmp_path / "report.json"
    r = llmhost_eval(
        "--url", server.url, "--data", str(data), "--api", api, "--max-tokens", "8",
        "--threshold", "0", "--out", str(out), "--concurrency", "2",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout and "chars/s" in r.stdout and "worst 3 of 3" in r.stdout
    report = json.loads(out.read_text())
    assert report["api"] == api and report["metric"] == "rougeL-jieba"
    assert report["num_items"] == 3 and report["num_errors"] == 0 and report["passed"] is True
    assert report["output_chars"] == sum(len(i["answer"]) for i in report["items"]) > 0
    assert report["chars_per_s"] > 0 and report["wall_time_s"] > 0
    assert "rougeL-harness" in report["other_means"]
    assert [i["line"] for i in report["items"]] == [1, 2, 3]
    assert all(set(i) == ITEM_KEYS and i["error"] is None and 0 <= i["score"] <= 1 for i in report["items"])
    assert report["mean_score"] == pytest.approx(sum(i["score"] for i in report["items"]) / 3)
    if api == "chat":  # only the OpenAI API reports usage
        assert report["tokens_per_s"] > 0 and all(0 < i["completion_tokens"] <= 8 for i in report["items"])
    else:
        assert report["tokens_per_s"] is None and "tokens/s n/a" in r.stdout
    if api == "predict-batch":
        assert all(i["latency_s"] is None for i in report["items"])
    else:
        assert all(i["latency_s"] > 0 for i in report["items"])


@pytest.mark.e2e
def test_below_the_threshold_exits_1(server, tmp_path):
    data = write_qa(tmp_path / "qa.jsonl", [{"question": "Say hello.", "answer": "zzz-not-an-answer"}])
    r = llmhost_eval("--url", server.url, "--data", str(data), "--metric", "exact", "--max-tokens", "4")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "exact mean 0.0000" in r.stdout


@pytest.mark.e2e
def test_harness_metric_runs_against_the_server(server, tmp_path):
    data = write_qa(tmp_path / "qa.jsonl", QA[:1])
    r = llmhost_eval(
        "--url", server.url, "--data", str(data), "--metric", "rougeL-harness", "--max-tokens", "4",
        "--threshold", "0",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rougeL-harness mean" in r.stdout and "rougeL-jieba mean" in r.stdout


def test_a_malformed_line_exits_2_naming_it(tmp_path):
    data = write_qa(tmp_path / "qa.jsonl", [QA[0], QA[2], '{"question": "q", "answer": '])
    r = llmhost_eval("--url", "http://127.0.0.1:9", "--data", str(data))
    assert r.returncode == 2
    assert "qa.jsonl:3: not valid JSON" in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--api", "grpc"], "unknown --api 'grpc'"), (["--metric", "bleu"], "unknown metric")],
)
def test_bad_options_exit_2(tmp_path, args, message):
    data = write_qa(tmp_path / "qa.jsonl", QA)
    r = llmhost_eval("--url", "http://127.0.0.1:9", "--data", str(data), *args)
    assert r.returncode == 2 and message in r.stderr


def test_an_unreachable_server_fails_with_the_reason(tmp_path):
    data, out = write_qa(tmp_path / "qa.jsonl", QA[:2]), tmp_path / "report.json"
    url = f"http://127.0.0.1:{free_port()}"
    r = llmhost_eval("--url", url, "--data", str(data), "--api", "predict", "--out", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert report["num_errors"] == 2 and report["passed"] is False
    assert all("cannot reach" in i["error"] for i in report["items"])
    assert "2 of 2 requests failed" in r.stdout


def test_chat_against_an_unreachable_server_names_the_error(tmp_path):
    data, out = write_qa(tmp_path / "qa.jsonl", QA[:1]), tmp_path / "report.json"
    url = f"http://127.0.0.1:{free_port()}"
    r = llmhost_eval("--url", url, "--data", str(data), "--api", "chat", "--model", "m", "--out", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    assert json.loads(out.read_text())["items"][0]["error"].startswith("ConnectError: ")
