"""`llmhost serve --ray` on a real two-node Ray cluster (tests/ray_serve/cluster.py): two replicas of the
embedded model, one per node, behind Ray Serve's proxy; every face answers through it, requests spread
over both replicas, sessions stay on theirs, a client that leaves frees its sequence, a replica's 429 reaches
the client unchanged, `/metrics` shows each replica, and a replica killed mid-request is restarted by Serve
while its requests fail at once.

One llama.cpp thread per replica: the box has 2 cores, shared."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer, start_server, stop_server
from tests.ray_serve.cluster import Cluster, start_cluster

if importlib.util.find_spec("ray") is None:  # the test extra installs it (pyproject.toml)
    pytest.skip("Ray Serve is not installed: pip install -e '.[ray]'", allow_module_level=True)

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

REPLICA_TITLE = "ray::ServeReplica:llmhost:LlmhostReplica"
REPLICA_HEADER = "x-llmhost-replica"
MAX_NUM_SEQS, MAX_QUEUED = 4, 16


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("ray"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ["--ray", "--ray-address", cluster.address, "--ray-replicas", "2", "--ray-num-cpus", "1"]
    args += [
        "--max-model-len",
        "1024",
        "--threads",
        "1",
        "--shutdown-grace",
        "2",
        "--max-request-body-mb",
        "1",
    ]
    args += ["--max-num-seqs", str(MAX_NUM_SEQS), "--max-queued-requests", str(MAX_QUEUED)]
    try:
        srv = start_server(tmp_path_factory.mktemp("llmhost-ray"), *args, env=cluster.env, timeout_s=300)
    except RuntimeError as exc:  # say what the nodes said too
        raise RuntimeError(f"{exc}\n{_node_logs(cluster)}") from None
    try:
        # /health answers once one replica is up; the command says "serving" once both are.
        deadline = time.monotonic() + 240
        while "through Ray Serve" not in srv.log():
            assert time.monotonic() < deadline, f"not deployed:\n{srv.log()}\n{_node_logs(cluster)}"
            time.sleep(0.5)
        yield srv
    finally:
        stop_server(srv)


def _node_logs(cluster: Cluster) -> str:
    return "\n".join(f"--- ray {node.name} ---\n{node.log()[-3000:]}" for node in cluster.nodes)


def _chat(server: RunningServer, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": "any", "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=120)


def _replica_pages(server: RunningServer) -> dict[str, dict[str, float]]:
    """From the merged `/metrics`: {replica id: {sample name: summed value}}."""
    text = httpx.get(f"{server.url}/metrics", timeout=60).text
    pages: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values = pages.setdefault(sample.labels["replica"], {})
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return pages


def test_replicas_run_one_on_each_node(server, cluster):
    per_node = {node.name: node.processes_titled(REPLICA_TITLE) for node in cluster.nodes}
    assert [len(pids) for pids in per_node.values()] == [1, 1], per_node
    assert len(_replica_pages(server)) == 2


def test_openai_sdk_chat_streamed_and_not(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    raw = client.chat.completions.with_raw_response.create(model="any", messages=messages, max_tokens=8)
    reply = raw.parse()
    assert raw.headers[REPLICA_HEADER] and reply.choices[0].message.content
    assert reply.model == "SmolLM2-135M-Instruct" and reply.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model="any", messages=messages, max_tokens=8, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_simple_and_predict_faces(server):
    simple = httpx.post(
        f"{server.url}/api/v1/chat", json={"message": "Hello!", "max_new_tokens": 4}, timeout=120
    )
    assert simple.status_code == 200 and simple.json()["success"] is True
    with httpx.stream(
        "POST", f"{server.url}/api/v1/chat/stream", json={"message": "Hi", "max_new_tokens": 4}, timeout=120
    ) as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[0]["type"] == "start" and events[-1]["type"] == "end"
    predict = httpx.post(f"{server.url}/predict", json={"prompt": ["2+2?", "A colour?"], "max_new_tokens": 4})
    assert predict.status_code == 200 and len(predict.json()["response"]) == 2
    bad = httpx.post(f"{server.url}/api/v1/chat", json={"message": 5}, timeout=60)  # the face's own shape
    assert bad.status_code == 400 and bad.json()["success"] is False
    big = b'{"message": "' + b"x" * 2**21 + b'"}'  # over --max-request-body-mb: the replica's 413
    too_big = httpx.post(f"{server.url}/api/v1/chat", content=big, timeout=60)
    assert too_big.status_code == 413 and too_big.json()["success"] is False


def test_concurrent_requests_are_spread_over_both_replicas(server):
    before = _replica_pages(server)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: _chat(server, f"Question number {i}: name a fruit."), range(16)))
    assert [a.status_code for a in answers] == [200] * 16
    served = {a.headers[REPLICA_HEADER] for a in answers}
    assert len(served) == 2, served
    after = _replica_pages(server)
    for replica in served:  # each replica's own counter moved
        name = "vllm:request_success_total"
        assert after[replica][name] > before.get(replica, {}).get(name, 0.0)


def test_a_session_and_a_conversation_stay_on_their_replica(server):
    sessions = [
        _chat(server, f"Turn {i}", headers={"x-session-id": "sess-42"}).headers[REPLICA_HEADER]
        for i in range(4)
    ]
    assert len(set(sessions)) == 1
    history = [{"role": "user", "content": "Let us talk about rivers."}]
    replicas = set()
    for turn in range(3):
        body = {"model": "any", "messages": history, "max_tokens": 4}
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
        replicas.add(answer.headers[REPLICA_HEADER])
        history = [
            *history,
            answer.json()["choices"][0]["message"],
            {"role": "user", "content": f"More {turn}"},
        ]
    assert len(replicas) == 1


def test_a_client_that_goes_away_frees_its_sequence(server):
    replica = sorted(_replica_pages(server))[0]
    aborted_before = _num_aborted(server, replica)
    body = {"model": "any", "messages": [{"role": "user", "content": "Count."}], "stream": True}
    body |= {"max_tokens": 900, "ignore_eos": True}
    url = f"{server.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers={REPLICA_HEADER: replica}, timeout=60) as response:
        deadline = time.monotonic() + 60
        for _ in response.iter_lines():  # until the replica is generating it
            if _replica_pages(server)[replica]["vllm:num_requests_running"] >= 1:
                break
            assert time.monotonic() < deadline
    # Closed: the ingress' call is cancelled, the replica's app sees the disconnect, the engine stops the
    # sequence (counted as aborted, not finished by length).
    deadline = time.monotonic() + 30
    while _num_aborted(server, replica) == aborted_before:
        assert time.monotonic() < deadline, "the sequence kept running after its client left"
        time.sleep(0.2)
    assert _replica_pages(server)[replica]["vllm:num_requests_running"] == 0


def _num_aborted(server: RunningServer, replica: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=60).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "vllm:request_success_total"
        and sample.labels.get("finished_reason") == "abort"
        and sample.labels["replica"] == replica
    )


def test_a_full_replica_answers_429_unchanged(server):
    replica = sorted(_replica_pages(server))[0]
    pinned = {REPLICA_HEADER: replica}
    busy = {"model": "any", "messages": [{"role": "user", "content": "Go on."}], "max_tokens": 256}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            httpx.post,
            f"{server.url}/v1/chat/completions",
            json={**busy, "ignore_eos": True},
            headers=pinned,
            timeout=120,
        )
        deadline = time.monotonic() + 60
        while _replica_pages(server)[replica]["vllm:num_requests_running"] < 1:
            assert time.monotonic() < deadline and not running.done(), "the first request never ran"
            time.sleep(0.05)
        # A batch counts as its prompts: one this size fits an idle replica only (an idle one admits any).
        prompts = [f"p{i}" for i in range(MAX_NUM_SEQS + MAX_QUEUED)]
        answer = httpx.post(f"{server.url}/predict", json={"prompt": prompts}, headers=pinned, timeout=60)
        assert running.result().status_code == 200
    assert answer.status_code == 429 and answer.headers["retry-after"]
    assert answer.headers[REPLICA_HEADER] == replica
    assert "detail" in answer.json()  # the predict face's shape, from the replica


def test_a_killed_replica_fails_its_requests_at_once_and_serve_restarts_it(server, cluster):
    ids = sorted(_replica_pages(server))
    outcomes: dict[tuple[str, str], str] = {}
    failures: list[tuple[float, str]] = []  # when and why
    started = threading.Event()

    def stream(replica: str) -> None:
        body = {"model": "any", "messages": [{"role": "user", "content": "Tell a long story."}]}
        body |= {"max_tokens": 256, "ignore_eos": True, "stream": True}
        try:
            with httpx.stream(
                "POST",
                f"{server.url}/v1/chat/completions",
                json=body,
                headers={REPLICA_HEADER: replica},
                timeout=httpx.Timeout(60),
            ) as response:
                assert response.headers[REPLICA_HEADER] == replica
                for line in response.iter_lines():
                    started.set()
                    if line == "data: [DONE]":
                        outcomes[(replica, "stream")] = "done"
                        return
                    if '"error"' in line:
                        outcomes[(replica, "stream")] = "error event"
                        return
            outcomes[(replica, "stream")] = "ended without [DONE]"
        except httpx.HTTPError as exc:
            outcomes[(replica, "stream")] = f"failed: {type(exc).__name__}"
            failures.append((time.monotonic(), str(exc)))

    def whole(replica: str) -> None:
        body = {"model": "any", "messages": [{"role": "user", "content": "Another long story."}]}
        body |= {"max_tokens": 256, "ignore_eos": True}
        try:
            answer = httpx.post(
                f"{server.url}/v1/chat/completions", json=body, headers={REPLICA_HEADER: replica}, timeout=60
            )
        except httpx.HTTPError as exc:
            outcomes[(replica, "whole")] = f"failed: {type(exc).__name__}"
            return
        outcomes[(replica, "whole")] = str(answer.status_code)
        if answer.status_code != 200:
            failures.append((time.monotonic(), answer.json()["error"]["message"]))

    threads = [threading.Thread(target=f, args=(r,)) for r in ids for f in (stream, whole)]
    for thread in threads:
        thread.start()
    assert started.wait(60), "no stream started"
    time.sleep(0.3)  # every request is in flight
    [victim_pid] = cluster.nodes[1].processes_titled(REPLICA_TITLE)
    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(t.is_alive() for t in threads), f"requests hang: {outcomes}"
    by_replica = {r: (outcomes.get((r, "stream")), outcomes.get((r, "whole"))) for r in ids}
    assert sorted(by_replica.values()) == [("done", "200"), ("failed: RemoteProtocolError", "503")], (
        by_replica
    )
    # The killed replica's requests fail as soon as Serve notices, not when a timeout runs out: the stream
    # is cut (the client's read fails), the whole answer is a 503 saying why.
    assert len(failures) == 2 and all(at - killed_at < 15 for at, _ in failures), failures
    assert any("unavailable" in why and "retry" in why for _, why in failures), failures

    # Serve starts a new replica on the worker node (the only one with a free CPU) and routes to it.
    deadline = time.monotonic() + 120
    while set(pages := _replica_pages(server)) & set(ids) == set(ids) or len(pages) < 2:
        assert time.monotonic() < deadline, f"no replacement replica: {list(pages)}"
        time.sleep(1)
    assert len(cluster.nodes[1].processes_titled(REPLICA_TITLE)) == 1
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _chat(server, f"After the restart {i}"), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
