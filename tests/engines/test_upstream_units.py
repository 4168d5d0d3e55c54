"""Upstream engines without a model: command lines, vLLM memory failures, GPU sets, routing, the wire
mapping, and the supervisor's process handling against a tiny real HTTP child (tests/engines/
upstream_fake_server.py). The llama.cpp servers' own units are in test_llama_cpp_servers.py; the
real-model paths are in test_upstream_engine.py and tests/e2e."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path

import pytest

from llmhost.engines.upstream import replica_gpu_sets
from llmhost.engines.upstream.commands import (
    KINDS,
    EngineKind,
    LaunchSpec,
    find_memory_failure,
    split_engine_args,
    with_max_model_len,
)
from llmhost.engines.upstream.router import Router
from llmhost.engines.upstream.supervisor import Supervisor, child_env
from llmhost.engines.upstream.wire import (
    DIALECTS,
    completion_body,
    finish_reason,
    parse_logprobs,
    parse_usage,
)
from llmhost.errors import InvalidRequest, ModelLoadError
from llmhost.types import FinishReason, SamplingParams, Usage

FAKE_SERVER = Path(__file__).with_name("upstream_fake_server.py")

SPEC = LaunchSpec(
    kind="vllm",
    model_path="/models/Qwen2.5-14B-Instruct",
    served_name="qwen",
    python="/opt/vllm/bin/python",
    tensor_parallel_size=2,
    max_model_len=32768,
    gpu_memory_utilization=0.9,
    quantization="awq",
    dtype="float16",
    max_num_seqs=64,
    gpus=("GPU-0", "GPU-1"),
    extra_args=split_engine_args('--enforce-eager --chat-template "a b.jinja"'),
)


def _pairs(argv: list[str]) -> dict[str, str]:
    return {a: b for a, b in zip(argv, argv[1:], strict=False) if a.startswith("-")}


# -- command lines ------------------------------------------------------------------------------------
def test_vllm_command_from_llmhost_flags():
    argv = KINDS["vllm"].build(SPEC, 4321)
    assert argv[:3] == ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    flags = _pairs(argv)
    assert flags["--model"] == "/models/Qwen2.5-14B-Instruct" and flags["--served-model-name"] == "qwen"
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "4321"
    assert flags["--tensor-parallel-size"] == "2" and flags["--max-model-len"] == "32768"
    assert flags["--gpu-memory-utilization"] == "0.9" and flags["--quantization"] == "awq"
    assert flags["--dtype"] == "float16" and flags["--max-num-seqs"] == "64"
    assert argv[-3:] == ["--enforce-eager", "--chat-template", "a b.jinja"]  # passed through, last


def test_sglang_command():
    flags = _pairs(KINDS["sglang"].build(SPEC, 4321))
    assert flags["-m"] == "sglang.launch_server" and flags["--model-path"] == SPEC.model_path
    assert flags["--tp-size"] == "2" and flags["--context-length"] == "32768"
    assert flags["--mem-fraction-static"] == "0.9" and flags["--quantization"] == "awq"
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "4321"


def test_lmdeploy_command():
    argv = KINDS["lmdeploy"].build(SPEC, 4321)
    assert argv[1:6] == ["-m", "lmdeploy", "serve", "api_server", SPEC.model_path]
    flags = _pairs(argv)
    assert flags["--server-name"] == "127.0.0.1" and flags["--server-port"] == "4321"
    assert flags["--tp"] == "2" and flags["--session-len"] == "32768"
    assert flags["--cache-max-entry-count"] == "0.9" and flags["--model-format"] == "awq"
    assert flags["--model-name"] == "qwen"


def test_lmdeploy_rejects_a_quantization_it_cannot_read():
    from dataclasses import replace

    with pytest.raises(ModelLoadError, match="bitsandbytes"):
        KINDS["lmdeploy"].build(replace(SPEC, quantization="bitsandbytes"), 1)


def test_no_optional_flags_when_unset():
    spec = LaunchSpec(kind="vllm", model_path="/m", served_name="m", dtype="auto")
    argv = KINDS["vllm"].build(spec, 1)
    for flag in ("--max-model-len", "--gpu-memory-utilization", "--quantization", "--dtype"):
        assert flag not in argv


def test_with_max_model_len_overrides_pass_through_args_too():
    from dataclasses import replace

    spec = replace(SPEC, extra_args=("--max-model-len", "9999", "--enforce-eager"))
    lowered = with_max_model_len(spec, 4464)
    argv = KINDS["vllm"].build(lowered, 1)
    assert _pairs(argv)["--max-model-len"] == "4464" and "9999" not in argv


def test_child_env_pins_gpus_and_drops_llmhost_settings(monkeypatch):
    monkeypatch.setenv("LLMHOST_ENGINE_API_KEY", "secret-key")
    monkeypatch.setenv("LLMHOST_API_KEY", "another")
    spec = LaunchSpec(kind="vllm", model_path="/m", served_name="m", gpus=("GPU-a", "GPU-b"), env={"A": "1"})
    env = child_env(spec)
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-a,GPU-b" and env["A"] == "1"
    assert not any(k.startswith("LLMHOST_") for k in env)
    assert "secret-key" not in env.values()


# -- vLLM memory failures (the lines vLLM writes; seed 004 and vLLM v1) ----------------------------------
NO_CACHE = (
    "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
    "when initializing the engine."
)
KV_TOO_SMALL = (
    "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be "
    "stored in KV cache (4464). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` "
    "when initializing the engine."
)
ESTIMATED = (
    "(EngineCore_DP0 pid=2117) ValueError: To serve at least one request with the models's max seq len "
    "(32768), (6.00 GiB KV cache is needed, which is larger than the available KV cache memory (2.64 GiB)."
    " Based on the available memory, the estimated maximum model length is 14432. Try increasing "
    "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
)


def test_memory_failures_are_recognised_with_the_context_that_fits():
    assert find_memory_failure("INFO loading\n" + NO_CACHE + "\n").fitting_max_model_len is None
    assert find_memory_failure(KV_TOO_SMALL).fitting_max_model_len == 4464
    assert find_memory_failure(ESTIMATED).fitting_max_model_len == 14432
    assert find_memory_failure("RuntimeError: [TM][ERROR]  Assertion fail: bind.cpp:423") is None
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 270.00 MiB."
    assert find_memory_failure(oom) is None


# -- GPU sets for replicas --------------------------------------------------------------------------------
def _gpus(free_gib: list[float]) -> list:
    from llmhost.engines.gpu import GpuDevice

    return [
        GpuDevice(i, f"GPU-{i:04d}", "H100", 80 << 30, int(f * (1 << 30))) for i, f in enumerate(free_gib)
    ]


def _uuids(sets) -> list:
    return [tuple(g.device.uuid for g in s) if s is not None else None for s in sets]


def test_replica_gpu_sets_are_disjoint_and_follow_cuda_visible_devices():
    eight = _gpus([70, 10, 60, 75, 80, 50, 79, 20])
    no_env: dict = {}
    assert _uuids(replica_gpu_sets("0,1,2,3", 2, 2, devices=eight, env=no_env)) == [
        ("GPU-0000", "GPU-0001"),
        ("GPU-0002", "GPU-0003"),
    ]
    # auto: the replicas × tp GPUs with the most free memory (4: 80, 6: 79, 3: 75, 0: 70), in index order
    assert _uuids(replica_gpu_sets("auto", 2, 2, devices=eight, env=no_env)) == [
        ("GPU-0000", "GPU-0003"),
        ("GPU-0004", "GPU-0006"),
    ]
    assert replica_gpu_sets("none", 2, 1, devices=eight, env=no_env) == [None, None]
    with pytest.raises(ModelLoadError, match="needs 4 GPUs"):
        replica_gpu_sets("0,1,2", 2, 2, devices=eight, env=no_env)
    # llmhost itself sees NVML GPUs 3,5,6,7 as cuda:0..3: its indices 1 and 3 are NVML 5 and 7.
    env = {"CUDA_VISIBLE_DEVICES": "3,5,6,7"}
    sets = replica_gpu_sets("1,3", 2, 1, devices=eight, env=env)
    assert _uuids(sets) == [("GPU-0005",), ("GPU-0007",)] and [s[0].cuda_index for s in sets] == [1, 3]
    with pytest.raises(ModelLoadError, match="no visible GPU with index 4"):
        replica_gpu_sets("4", 1, 1, devices=eight, env=env)
    with pytest.raises(ModelLoadError, match="3 needed|needs"):
        replica_gpu_sets("auto", 3, 1, devices=_gpus([10, 10]), env=no_env)
    assert replica_gpu_sets("auto", 2, 1, devices=[], env=no_env) == [(), ()]  # no GPU: not pinned


# -- routing ---------------------------------------------------------------------------------------------
class _B:
    def __init__(self, name: str) -> None:
        self.label, self.base_url, self.in_flight = name, f"http://{name}", 0


def test_router_fewest_in_flight_skips_dead_and_keeps_affinity():
    a, b, c = _B("a"), _B("b"), _B("c")
    router = Router([a, b, c])
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert router.pick() is b
    b.base_url = None  # dead: out of rotation
    assert router.pick() is c
    b.base_url = "http://b"  # back
    assert router.pick() is b
    # A conversation stays where it started while that replica is up, even when it is busier.
    first = router.pick("conv-1")
    first.in_flight += 10
    assert router.pick("conv-1") is first
    first.base_url = None
    moved = router.pick("conv-1")
    assert moved is not first and router.pick("conv-1") is moved
    for x in (a, b, c):
        x.base_url = None
    assert router.pick() is None


def test_router_spreads_ties():
    backends = [_B("a"), _B("b")]
    router = Router(backends)
    assert {router.pick().label for _ in range(4)} == {"a", "b"}


# -- wire mapping -------------------------------------------------------------------------------------
def test_completion_body_sends_every_knob_explicitly_in_the_servers_spelling():
    params = SamplingParams(
        max_tokens=5, temperature=0.0, seed=7, stop=("\n\n",), logprobs=2, repetition_penalty=1.2
    )
    body = completion_body("m", [1, 2, 3], params, 5, DIALECTS["vllm"])
    assert body["prompt"] == [1, 2, 3] and body["stream"] is True and body["max_tokens"] == 5
    assert body["top_k"] == -1 and body["min_p"] == 0.0 and body["temperature"] == 0.0
    assert body["repetition_penalty"] == 1.2 and "repeat_penalty" not in body
    assert body["stop"] == ["\n\n"] and body["seed"] == 7 and body["logprobs"] == 2
    assert body["return_token_ids"] is True
    llama = completion_body("m", "text", SamplingParams(), 9, DIALECTS["llama.cpp"])
    assert llama["top_k"] == 0 and llama["repeat_penalty"] == 1.0 and "repetition_penalty" not in llama
    generic = completion_body("m", "text", SamplingParams(), 9)
    assert generic["repeat_penalty"] == generic["repetition_penalty"] == 1.0
    assert generic["add_special_tokens"] is False


def test_grammar_goes_in_each_servers_field_or_is_refused():
    params = SamplingParams(grammar='root ::= "yes" | "no"')
    assert completion_body("m", "p", params, 4, DIALECTS["llama.cpp"])["grammar"] == params.grammar
    vllm = completion_body("m", [1], params, 4, DIALECTS["vllm"])
    assert vllm["structured_outputs"] == {"grammar": params.grammar}
    assert completion_body("m", [1], params, 4, DIALECTS["sglang"])["ebnf"] == params.grammar
    with pytest.raises(InvalidRequest) as err:
        completion_body("m", "p", params, 4, DIALECTS["lmdeploy"])
    assert err.value.param == "response_format"


def test_logit_bias_and_min_tokens_go_to_servers_that_have_them_or_are_refused():
    params = SamplingParams(max_tokens=8, logit_bias=((42, -100.0), (7, 2.5)), min_tokens=3)
    for dialect in ("vllm", "sglang", "generic"):
        body = completion_body("m", [1], params, 8, DIALECTS[dialect])
        assert body["logit_bias"] == {"42": -100.0, "7": 2.5} and body["min_tokens"] == 3, dialect
    with pytest.raises(InvalidRequest) as err:  # llama-server and llama-cpp-python have no minimum
        completion_body("m", [1], params, 8, DIALECTS["llama.cpp"])
    assert err.value.param == "min_tokens"
    llama = completion_body("m", [1], SamplingParams(logit_bias=((42, -100.0),)), 8, DIALECTS["llama.cpp"])
    assert llama["logit_bias"] == {"42": -100.0} and "min_tokens" not in llama
    with pytest.raises(InvalidRequest) as err:
        completion_body("m", [1], SamplingParams(logit_bias=((42, 1.0),)), 8, DIALECTS["lmdeploy"])
    assert err.value.param == "logit_bias"
    plain = completion_body("m", [1], SamplingParams(), 8, DIALECTS["vllm"])
    assert "logit_bias" not in plain and "min_tokens" not in plain


def test_finish_reasons_and_logprobs_map_back():
    assert finish_reason("length") is FinishReason.LENGTH and finish_reason(None) is None
    assert finish_reason("stop") is FinishReason.STOP and finish_reason("abort") is FinishReason.ABORT
    raw = {
        "tokens": ["Hi", "bytes:\\xe4"],
        "token_logprobs": [-0.5, -1.0],
        "top_logprobs": [{"Hi": -0.5, "Hello": -1.5, "Hey": -2.0}, None],
    }
    out = parse_logprobs(raw, 1, lambda t: {"Hi": 7}.get(t, -1))
    assert out[0].token_id == 7 and out[0].logprob == -0.5 and [t.token_bytes for t in out[0].top] == [b"Hi"]
    assert out[1].token_bytes == b"\xe4" and out[1].top == ()


# -- the supervisor, against a real (tiny) child HTTP server ---------------------------------------------
def _fake_kind(*extra: str) -> EngineKind:
    def build(spec: LaunchSpec, port: int) -> list[str]:
        argv = [sys.executable, str(FAKE_SERVER), "--port", str(port), *extra]
        if spec.max_model_len is not None:
            argv += ["--max-model-len", str(spec.max_model_len)]
        return argv

    return EngineKind(build, "/health", True, ("hf",))


def _spec(max_model_len: int | None = 32768) -> LaunchSpec:
    return LaunchSpec(kind="fake", model_path="/m", served_name="m", max_model_len=max_model_len)


async def test_supervisor_retries_once_with_the_context_that_fits(tmp_path, caplog):
    sup = Supervisor(
        _spec(), _fake_kind("--fits", "4464"), label="fake", log_dir=tmp_path, startup_timeout_s=60
    )
    await sup.start()
    try:
        assert sup.spec.max_model_len == 4464 and sup.base_url is not None
        assert any("retrying ONCE with --max-model-len 4464" in r.getMessage() for r in caplog.records)
    finally:
        await sup.close()


async def test_supervisor_names_the_knobs_when_no_context_fits(tmp_path):
    sup = Supervisor(
        _spec(), _fake_kind("--no-cache-memory"), label="fake", log_dir=tmp_path, startup_timeout_s=60
    )
    with pytest.raises(ModelLoadError) as err:
        await sup.start()
    assert "No available memory for the cache blocks" in err.value.message
    assert "--gpu-memory-utilization" in err.value.message and "--max-model-len" in err.value.message


async def test_supervisor_reports_a_crash_at_start_with_the_log_tail(tmp_path):
    sup = Supervisor(_spec(), _fake_kind("--crash"), label="fake", log_dir=tmp_path, startup_timeout_s=60)
    with pytest.raises(ModelLoadError, match="(?s)exited with code 3.*weights are missing"):
        await sup.start()


async def test_supervisor_health_deadline(tmp_path):
    sup = Supervisor(
        _spec(), _fake_kind("--never-healthy"), label="fake", log_dir=tmp_path, startup_timeout_s=2
    )
    with pytest.raises(ModelLoadError, match="not healthy within 2s"):
        await sup.start()


async def test_supervisor_restarts_a_dead_child_and_kills_its_group_on_close(tmp_path):
    sup = Supervisor(
        _spec(None),
        _fake_kind("--grandchild", str(tmp_path)),
        label="fake",
        log_dir=tmp_path,
        startup_timeout_s=60,
        first_backoff_s=0.1,
    )
    events: list[str] = []
    sup.listeners.append(lambda event, s: events.append(event))
    await sup.start()
    first_pid = sup.pid
    os.kill(first_pid, signal.SIGKILL)
    for _ in range(200):
        if events[-1:] == ["up"]:
            break
        await asyncio.sleep(0.1)
    assert events == ["down", "restarted", "up"] and sup.restarts == 1 and sup.pid != first_pid
    orphan = int((tmp_path / f"grandchild-{first_pid}").read_text())
    assert not _alive(orphan)  # the dead child's worker was swept with its group before the restart
    grandchild = int((tmp_path / f"grandchild-{sup.pid}").read_text())
    await sup.close()
    for _ in range(50):
        if not _alive(grandchild):
            break
        await asyncio.sleep(0.1)
    assert not _alive(sup.pid) and not _alive(grandchild)  # the whole process group went


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- tokenizing an HF folder here (tokenizer.json through `tokenizers`) --------------------------------
def test_hf_folder_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    import json

    from llmhost.engines.upstream.tokenizer import HfTokenizer

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "<|im_start|>": 3, "<|im_end|>": 4}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    template = "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": template, "eos_token": {"content": "<|im_end|>"}, "bos_token": None})
    )
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    hf = HfTokenizer(tmp_path)
    assert hf.info.chat_template == template and hf.info.context_length == 4096
    assert hf.info.eos_token == "<|im_end|>" and hf.info.bos_token == "" and hf.info.vocab_size == 5
    ids = hf.tokenize("<|im_start|>hello world<|im_end|>")
    assert ids == [3, 1, 2, 4]
    assert hf.detokenize(ids) == "hello world"  # visible text: specials dropped
    assert "<|im_start|>" in hf.prompt_text(ids)  # prompt text for the server: specials written out


def test_hf_folder_without_tokenizer_json_is_a_clear_load_error(tmp_path):
    pytest.importorskip("tokenizers")
    from llmhost.engines.upstream.tokenizer import HfTokenizer

    with pytest.raises(ModelLoadError, match="no tokenizer.json"):
        HfTokenizer(tmp_path)


# -- fallback chains (logic; the real chain runs in tests/e2e/test_upstream_serve.py) ----------------
def test_chain_order_is_model_major_and_the_name_is_the_first_models(tmp_path, model_path):
    from llmhost.config import Settings
    from llmhost.engines.fallback import Candidate, FallbackEngine
    from llmhost.engines.registry import create_served_engine

    missing = str(tmp_path / "Qwen2.5-VL-3B-Instruct")
    settings = Settings(model=missing, fallback_model=[str(model_path)], engine="vllm,llama.cpp")
    engine, names = create_served_engine(settings)
    assert isinstance(engine, FallbackEngine) and names == ["Qwen2.5-VL-3B-Instruct"]
    assert engine.candidates == [
        Candidate("vllm", missing),
        Candidate("llama.cpp", missing),
        Candidate("vllm", str(model_path)),
        Candidate("llama.cpp", str(model_path)),
    ]
    with pytest.raises(ModelLoadError, match="unknown engine 'tgi'"):
        create_served_engine(Settings(engine="tgi"))


async def test_chain_serves_the_first_candidate_that_generates_and_reports_the_rest():
    from llmhost.engines.fallback import Candidate, FallbackEngine
    from llmhost.errors import EngineError
    from tests.scripted_engine import Script, ScriptedEngine

    broken = ScriptedEngine()
    broken.queue(Script([EngineError("CUDA error: an illegal memory access")]))  # loads, cannot generate
    good = ScriptedEngine()

    def build(c: Candidate):
        if c.model == "missing":
            raise ModelLoadError("model not found: missing")
        return broken if c.engine == "vllm" else good

    chain = FallbackEngine(
        [Candidate("vllm", "missing"), Candidate("vllm", "b"), Candidate("transformers", "b")], build
    )
    await chain.start()
    report = chain.load_report()
    assert report["chosen_engine"] == "transformers" and report["chosen_model"] == "b"
    assert [(f["engine"], f["model"]) for f in report["fallback_failures"]] == [
        ("vllm", "missing"),
        ("vllm", "b"),
    ]
    assert "model not found" in report["fallback_failures"][0]["error"]
    assert "illegal memory access" in report["fallback_failures"][1]["error"]
    assert broken.num_starts == 1 and not broken._is_running  # the failed one was closed again
    assert chain.info() == dataclasses.replace(
        good.info(), load_report=report
    )  # the chain's report rides along
    await chain.close()
    with pytest.raises(ModelLoadError, match="no engine and model of the chain loaded"):
        await FallbackEngine([Candidate("vllm", "missing")], build).start()


def test_gpu_engines_keep_their_own_concurrency_unless_told(model_path, tmp_path, monkeypatch):
    from llmhost.config import Settings
    from llmhost.engines.upstream import supervised_engine
    from llmhost.models.source import ModelSource

    hf = ModelSource(Path("/models/qwen"), "hf", "qwen")
    default = supervised_engine(Settings.load(gpu="none", replicas=2), hf, "qwen", "vllm")
    assert default.max_concurrency == 2 * 256
    assert "--max-num-seqs" not in KINDS["vllm"].build(default.backends[0].spec, 1)
    told = supervised_engine(Settings.load(gpu="none", max_num_seqs=32), hf, "qwen", "vllm")
    assert told.max_concurrency == 32 and "--max-num-seqs" in KINDS["vllm"].build(told.backends[0].spec, 1)
    gguf = ModelSource(model_path, "gguf", "smol")
    cpu = supervised_engine(Settings.load(gpu="none"), gguf, "smol", "llama-cpp-python")
    assert cpu.max_concurrency == 8
    # A GGUF for vLLM is converted with the engine's interpreter; one that does not exist fails clearly.
    with pytest.raises(ModelLoadError, match="does not exist"):
        monkeypatch.setenv("LLMHOST_CONVERTED_DIR", str(tmp_path))  # no cached conversion to reuse
        no_python = Settings.load(gpu="none", engine_python="/nonexistent/python")
        supervised_engine(no_python, gguf, "smol", "vllm")


def test_usage_takes_the_servers_completion_count_and_cache_hits_where_it_says_them():
    vllm = {"prompt_tokens": 40, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 32}}
    assert parse_usage(40, vllm, 6) == Usage(40, 7, cached_tokens=32)
    assert parse_usage(40, {"completion_tokens": 7, "prompt_tokens_details": None}, 6) == Usage(40, 7)
    assert parse_usage(40, None, 6) == Usage(40, 6)  # no usage on the chunk: what was counted here
    # Nonsense from a server never becomes a negative or over-long count.
    odd = {"completion_tokens": -1, "prompt_tokens_details": {"cached_tokens": 99}}
    assert parse_usage(40, odd, 6) == Usage(40, 6, cached_tokens=40)
