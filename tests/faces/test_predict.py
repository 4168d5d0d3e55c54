"""The predict face (seed 003) against real servers: readiness, single and batch answers, bad input."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from tests.conftest import TEST_MAX_MODEL_LEN, start_server, stop_server
from tests.scripted_engine import ScriptedEngine, scripted_client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory):
    """A `--batch-mode` server of this module's own (the shared one runs without it)."""
    srv = start_server(
        tmp_path_factory.mktemp("predict"),
        "--max-model-len",
        str(TEST_MAX_MODEL_LEN),
        "--max-num-seqs",
        "8",
        "--batch-mode",
        "--no-enable-prefix-caching",  # batch answers are compared with solo ones bit for bit
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def http(batch_server):
    with httpx.Client(base_url=batch_server.url, timeout=300) as client:
        yield client


def predict(http: httpx.Client, **body) -> httpx.Response:
    return http.post("/predict", json=body)


# -- GET / -------------------------------------------------------------------------------------------
def test_root_says_ok_or_batch(server, http):
    assert httpx.get(f"{server.url}/", timeout=10).json() == {"status": "ok"}
    r = http.get("/")
    assert r.status_code == 200 and r.json() == {"status": "batch"}


def test_root_gives_a_browser_the_chat_page_and_the_harness_its_json(http):
    """The chat page (tests/page) answers a browser; every API client keeps the readiness JSON."""
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    r = http.get("/", headers={"accept": browser}, follow_redirects=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert http.get("/", headers={"accept": "application/json"}).json() == {"status": "batch"}


async def test_root_and_predict_answer_503_until_the_model_is_loaded(model_path):
    """The app around a real, not yet started engine (ASGITransport runs no lifespan, so nothing loads)."""
    from llmhost.app import create_app
    from llmhost.config import Settings
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    engine = LlamaCppEngine(str(model_path), model_name="smol", max_model_len=TEST_MAX_MODEL_LEN)
    app = create_app(Settings(), engine, served_names=["smol"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = await client.post("/predict", json={"prompt": "hi"})
        assert r.status_code == 503 and set(r.json()) == {"detail"}


def test_root_answers_503_while_the_server_loads(tmp_path):
    """Poll `/` from the moment the port opens, as seed 003's harness does: never a 200 before the model
    can answer, and `/predict` works as soon as `/` says ok."""
    import subprocess
    import sys

    from tests.conftest import RunningServer, free_port

    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmhost", "serve", "--port", str(port), "--max-model-len", "512"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    srv = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, srv.log()
            try:
                r = httpx.get(f"{srv.url}/", timeout=5)
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            seen.append(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and r.json()["status"] == "loading"
        assert seen and seen[-1] == 200, srv.log()
        answer = httpx.post(f"{srv.url}/predict", json={"prompt": "Hi", "max_new_tokens": 4}, timeout=60)
        assert answer.status_code == 200 and answer.json()["response"]
    finally:
        stop_server(srv)


# -- POST /predict -------------------------------------------------------------------------------------
def test_single_prompt_gets_a_string(http):
    r = predict(http, prompt="What is the capital of France?", max_new_tokens=24)
    assert r.status_code == 200
    assert set(r.json()) == {"response"}
    answer = r.json()["response"]
    assert isinstance(answer, str) and answer == answer.strip() and answer
    assert "<|im_" not in answer  # the template's turn markers never leak into the answer


def test_one_item_list_gets_a_list(http):
    single = predict(http, prompt="Name a fruit.", max_new_tokens=12).json()["response"]
    listed = predict(http, prompt=["Name a fruit."], max_new_tokens=12).json()["response"]
    assert listed == [single]


def test_greedy_by_default_and_sampling_fields_are_honoured(http):
    body = {"prompt": "Write a short poem about the sea.", "max_new_tokens": 24}
    greedy = {predict(http, **body).json()["response"] for _ in range(2)}
    assert len(greedy) == 1
    sampled = {
        predict(http, **body, temperature=1.5, top_p=0.95, top_k=100).json()["response"] for _ in range(3)
    }
    assert len(sampled) > 1
    short = predict(http, **{**body, "max_new_tokens": 3}, repetition_penalty=1.1, frequency_penalty=0.5)
    assert short.status_code == 200 and len(short.json()["response"]) < len(greedy.pop())


@pytest.mark.timeout(900)  # 65 requests; on 2 shared cores they can crawl
def test_a_64_prompt_batch_returns_64_answers_in_order(http):
    """Each batch answer must be the greedy answer its own prompt gets alone; the prompts' solo answers
    differ from each other, so an answer in the wrong place, or mixed with another, is caught."""
    prompts = [f"Write the number {n * 7 + 3} in words." for n in range(64)]
    solo = [predict(http, prompt=p, max_new_tokens=8).json()["response"] for p in prompts]
    assert len(set(solo)) >= 60, solo  # distinct enough to catch reordering
    started = time.monotonic()
    r = predict(http, prompt=prompts, max_new_tokens=8)
    batch_s = time.monotonic() - started
    assert r.status_code == 200
    batch = r.json()["response"]
    assert isinstance(batch, list) and len(batch) == 64
    mismatched = [i for i, (b, s) in enumerate(zip(batch, solo, strict=True)) if b != s]
    assert not mismatched, [(i, batch[i], solo[i]) for i in mismatched]
    print(f"64-prompt batch: {batch_s:.1f}s")


def test_prompt_too_long_for_the_context_is_400_naming_its_index(http):
    prompts = ["Hi", "word " * 2000, "Hello", "word " * 3000]
    r = predict(http, prompt=prompts, max_new_tokens=4)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert re.search(r"\b1 \(\d+ tokens\)", detail) and re.search(r"\b3 \(\d+ tokens\)", detail), detail
    assert "--max-model-len" in detail


def test_a_prompt_that_leaves_little_room_gets_a_shorter_answer(http):
    """About 1000 of the 1024 tokens in the prompt: the answer is cut to the room left, not refused."""
    long_prompt = "Summarize: " + "the cat sat on the mat. " * 136  # ~990 tokens
    r = predict(http, prompt=[long_prompt, "Say hi."], max_new_tokens=200)
    assert r.status_code == 200, r.text
    assert len(r.json()["response"]) == 2


BAD = [
    ("missing prompt", {}, 422, "'prompt' is required"),
    ("prompt a number", {"prompt": 5}, 422, "string or a list of strings"),
    ("prompt null", {"prompt": None}, 422, "string or a list of strings"),
    ("prompt an object", {"prompt": {"a": 1}}, 422, "string or a list of strings"),
    ("empty list", {"prompt": []}, 422, "empty list"),
    ("list with a number", {"prompt": ["a", 3]}, 422, "'prompt[1]' must be a string"),
    ("list with null", {"prompt": ["a", None]}, 422, "'prompt[1]' must be a string"),
    ("nested list", {"prompt": [["a"]]}, 422, "'prompt[0]' must be a string"),
    ("temperature a string", {"prompt": "a", "temperature": "hot"}, 422, "'temperature'"),
    ("max_new_tokens a float", {"prompt": "a", "max_new_tokens": 1.5}, 422, "'max_new_tokens'"),
    ("max_new_tokens zero", {"prompt": "a", "max_new_tokens": 0}, 422, "'max_new_tokens'"),
    ("temperature too high", {"prompt": "a", "temperature": 7}, 400, "'temperature'"),
    ("top_p zero", {"prompt": "a", "top_p": 0}, 400, "'top_p'"),
    ("top_k negative", {"prompt": "a", "top_k": -5}, 400, "'top_k'"),
    ("repetition_penalty zero", {"prompt": "a", "repetition_penalty": 0}, 400, "'repetition_penalty'"),
    ("frequency_penalty too big", {"prompt": "a", "frequency_penalty": 9}, 400, "'frequency_penalty'"),
    ("body a list", ["a"], 422, "JSON object"),
]


@pytest.mark.parametrize(("name", "body", "status", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_4xx_with_a_detail_message(http, name, body, status, fragment):
    r = http.post("/predict", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"detail"} and isinstance(r.json()["detail"], str)
    assert fragment in r.json()["detail"]


def test_unparseable_bodies_get_the_detail_shape_too(http):
    r = http.post("/predict", content=b'{"prompt": [', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = http.post("/predict", content=b'{"prompt": "hi"}', headers={"content-type": "text/plain"})
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["detail"]
    r = http.get("/predict")
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}
    r = http.post("/", json={"prompt": "hi"})
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}
    r = http.post("/predict", content=b'{"prompt": "\xff"}', headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and set(r.json()) == {"detail"}
    # ... while the OpenAI face keeps its own shape on the same server.
    r = http.post("/v1/chat/completions", json={"messages": []})
    assert r.status_code == 400 and set(r.json()) == {"error"}
    assert predict(http, prompt="still serving?", max_new_tokens=2).status_code == 200


async def test_a_client_that_goes_away_cancels_its_batch(batch_server):
    """A harness that gives up on a batch must not leave the engine decoding it."""

    def num_running(text: str) -> float:
        return float(re.search(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", text, re.M).group(1))

    async with httpx.AsyncClient(base_url=batch_server.url, timeout=60) as client:
        body = {"prompt": ["Tell a long story."] * 4, "max_new_tokens": 900}
        task = asyncio.create_task(client.post("/predict", json=body))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and num_running((await client.get("/metrics")).text) < 4:
            await asyncio.sleep(0.05)
        assert num_running((await client.get("/metrics")).text) == 4
        task.cancel()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and num_running((await client.get("/metrics")).text) > 0:
            await asyncio.sleep(0.1)
        assert num_running((await client.get("/metrics")).text) == 0


# -- what the face does with given model output (ScriptedEngine: no model, exact outputs) -------------
async def test_thinking_is_stripped_from_every_answer():
    engine = ScriptedEngine()
    engine.queue(
        ["<think>", "2+2 is ", "4", "</think>", "\n\nFour."],
        ["The template opened it, ", "</think>", "Paris"],
        ["<think>", "only thoughts, cut by max_tokens"],
        ["No thinking here."],
    )
    async with scripted_client(engine) as client:
        r = await client.post("/predict", json={"prompt": ["a", "b", "c", "d"]})
    assert r.json() == {
        "response": ["Four.", "Paris", "only thoughts, cut by max_tokens", "No thinking here."]
    }


async def test_prompt_rendering_system_prompt_and_default_sampling():
    engine = ScriptedEngine()
    async with scripted_client(
        engine, predict_system_prompt="Answer briefly.", predict_max_new_tokens=7
    ) as client:
        r = await client.post("/predict", json={"prompt": "What is CUDA?"})
        assert r.status_code == 200
        [call] = engine.calls
        assert call.prompt_text == (
            "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
            "<|im_start|>user\nWhat is CUDA?<|im_end|>\n<|im_start|>assistant\n"
        )
        assert call.params.max_tokens == 7 and call.params.is_greedy
        assert call.params.repetition_penalty == 1.05
        await client.post(
            "/predict", json={"prompt": "x", "max_new_tokens": 3, "temperature": 0.5, "top_k": 9}
        )
        params = engine.calls[-1].params
        assert (params.max_tokens, params.temperature, params.top_k) == (3, 0.5, 9)


async def test_answers_are_cut_to_the_room_the_context_leaves():
    engine = ScriptedEngine(max_model_len=160)  # one token per byte; the template adds ~55
    async with scripted_client(engine, predict_max_new_tokens=50) as client:
        r = await client.post("/predict", json={"prompt": ["short", "x" * 80]})
        assert r.status_code == 200
    short, long = engine.calls
    assert short.params.max_tokens == 50
    assert long.params.max_tokens == 160 - len(long.prompt_text.encode()) < 50


async def test_a_batch_over_capacity_is_refused_whole_in_the_detail_shape():
    engine = ScriptedEngine()
    async with scripted_client(engine, max_num_seqs=1, max_queued_requests=1) as client:
        admission = client.app.state.llmhost.admission
        admission.reserve(1)  # another request is in flight: capacity 2, one taken
        r = await client.post("/predict", json={"prompt": ["a", "b"]})
        assert r.status_code == 429 and set(r.json()) == {"detail"}
        assert r.headers["retry-after"]
        assert not engine.calls  # nothing started
        admission.release(1)
        ok = await client.post("/predict", json={"prompt": ["a", "b"]})
        assert ok.status_code == 200 and len(ok.json()["response"]) == 2


async def test_an_idle_server_admits_one_batch_larger_than_its_capacity():
    """A harness sends its whole question set as one batch: a 429 no retry could cure would be wrong."""
    engine = ScriptedEngine()
    async with scripted_client(engine, max_num_seqs=1, max_queued_requests=1) as client:
        r = await client.post("/predict", json={"prompt": ["a", "b", "c", "d", "e"]})
        assert r.status_code == 200 and len(r.json()["response"]) == 5
