"""The transformers engine on the real embedded model (the GGUF, dequantised to float32 on the CPU):
greedy parity with `model.generate`, batching without crosstalk, stops, limits, cancellation, context."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

import torch  # noqa: E402

from llmhost.errors import ContextLengthExceeded, EngineError, InvalidRequest  # noqa: E402
from llmhost.types import FinishReason, SamplingParams  # noqa: E402

from ..conftest import TEST_MAX_MODEL_LEN  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, a dragon",
    "1, 2, 3, 4, 5,",
]


@pytest.fixture(scope="module")
async def hf_engine(model_path: Path):
    from llmhost.engines.transformers.engine import TransformersEngine

    eng = TransformersEngine(
        model_path,
        model_format="gguf",
        model_name="smol",
        max_model_len=TEST_MAX_MODEL_LEN,
        max_num_seqs=4,
        dtype="float32",
        gpu="none",
    )
    await eng.start()
    yield eng
    await eng.close()


async def run(engine, prompt: str | list[int], params: SamplingParams):
    tokens_in = engine.tokenize(prompt) if isinstance(prompt, str) else prompt
    text, tokens, deltas = "", [], []
    async for delta in engine.generate(tokens_in, params):
        text += delta.text
        tokens += delta.token_ids
        deltas.append(delta)
    return text, tokens, deltas


def reference_greedy(engine, prompt_ids: list[int], n: int) -> list[int]:
    """A plain `model.generate` greedy run of the same weights: what the engine must reproduce."""
    model = engine._loaded.model
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
        )
    return out[0, len(prompt_ids) :].tolist()


async def test_info_exposes_what_the_chat_template_needs(hf_engine, engine):
    info = hf_engine.info()
    assert info.engine == "transformers" and info.device == "cpu"
    assert info.max_model_len == TEST_MAX_MODEL_LEN
    # Same GGUF, same template and special tokens as llama.cpp reads, so ChatTemplate.for_engine agrees.
    llama = engine.info()
    assert info.chat_template == llama.chat_template
    assert (info.bos_token, info.eos_token) == (llama.bos_token, llama.eos_token)


async def test_tokenize_matches_llamacpp_and_round_trips(hf_engine, engine):
    text = "<|im_start|>user\nHello, wörld! 你好 🙂<|im_end|>\n<|im_start|>assistant\n"
    ids = hf_engine.tokenize(text)
    assert ids == engine.tokenize(text)  # special-token text is parsed as the special token
    assert hf_engine.detokenize(hf_engine.tokenize("Hello, wörld! 你好 🙂")) == "Hello, wörld! 你好 🙂"


async def test_greedy_equals_model_generate(hf_engine):
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    for prompt in PROMPTS[:3]:
        ids = hf_engine.tokenize(prompt)
        _, tokens, deltas = await run(hf_engine, ids, params)
        expected = await asyncio.to_thread(reference_greedy, hf_engine, ids, 16)
        assert tokens == expected, prompt
        assert deltas[-1].finish_reason == FinishReason.LENGTH


async def test_batch_of_four_equals_each_alone(hf_engine):
    """Rows of different lengths share one left-padded KV cache; padding, positions or a wrong row
    would change the greedy tokens."""
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    solo = [await run(hf_engine, p, params) for p in PROMPTS]
    steps_before = hf_engine.stats().num_steps
    together = await asyncio.gather(*(run(hf_engine, p, params) for p in PROMPTS))
    steps = hf_engine.stats().num_steps - steps_before
    assert len({s[0] for s in solo}) == len(PROMPTS)
    for (solo_text, solo_tokens, _), (text, tokens, _) in zip(solo, together, strict=True):
        assert tokens == solo_tokens, (solo_text, text)
        assert text == solo_text
    assert steps < 2 * 16, steps  # one at a time would take 4 x 15 decode steps


async def test_sequences_joining_a_running_batch_match_their_solo_runs(hf_engine):
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    solo = [(await run(hf_engine, p, params))[1] for p in PROMPTS[:3]]
    first = asyncio.create_task(run(hf_engine, PROMPTS[0], params))
    await asyncio.sleep(0.3)  # the first is decoding when the others arrive (and join its batch)
    rest = await asyncio.gather(*(run(hf_engine, p, params) for p in PROMPTS[1:3]))
    assert [(await first)[1]] + [r[1] for r in rest] == solo


async def test_max_tokens_gives_length_and_exact_usage(hf_engine):
    _, tokens, deltas = await run(
        hf_engine, "Count: one, two,", SamplingParams(max_tokens=7, temperature=0.0, ignore_eos=True)
    )
    last = deltas[-1]
    assert last.finish_reason == FinishReason.LENGTH and len(tokens) == 7
    assert last.usage.completion_tokens == 7
    assert last.usage.prompt_tokens == len(hf_engine.tokenize("Count: one, two,"))


async def test_stop_string_cuts_text_and_finishes(hf_engine):
    base, _, _ = await run(hf_engine, "1, 2, 3, 4, 5,", SamplingParams(max_tokens=20, temperature=0.0))
    assert " 8" in base
    text, _, deltas = await run(
        hf_engine, "1, 2, 3, 4, 5,", SamplingParams(max_tokens=20, temperature=0.0, stop=(" 8",))
    )
    assert deltas[-1].finish_reason == FinishReason.STOP and deltas[-1].stop_reason == " 8"
    assert text == base[: base.index(" 8")]


async def test_stop_token_ids_and_eos(hf_engine):
    _, tokens, _ = await run(hf_engine, "1, 2, 3, 4, 5,", SamplingParams(max_tokens=8, temperature=0.0))
    stop_id = tokens[2]
    _, stopped, deltas = await run(
        hf_engine, "1, 2, 3, 4, 5,", SamplingParams(max_tokens=8, temperature=0.0, stop_token_ids=(stop_id,))
    )
    assert stopped == tokens[:3] and deltas[-1].stop_reason == stop_id
    chat = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
    text, tokens, deltas = await run(hf_engine, chat, SamplingParams(max_tokens=200, temperature=0.0))
    assert deltas[-1].finish_reason == FinishReason.STOP and deltas[-1].stop_reason is None
    assert "<|im_end|>" not in text and tokens[-1] in hf_engine._loaded.eog_token_ids


async def test_seeded_sampling_repeats_and_logprobs_are_sane(hf_engine):
    def params(seed: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=24, temperature=0.9, top_p=0.95, top_k=40, min_p=0.01, seed=seed, ignore_eos=True
        )

    a = (await run(hf_engine, "Once upon a time", params(7)))[0]
    assert a == (await run(hf_engine, "Once upon a time", params(7)))[0]
    assert a != (await run(hf_engine, "Once upon a time", params(8)))[0]
    _, tokens, deltas = await run(
        hf_engine, "The capital of France is", SamplingParams(max_tokens=4, temperature=0.0, logprobs=3)
    )
    logprobs = [lp for d in deltas for lp in d.logprobs]
    assert [lp.token_id for lp in logprobs] == tokens
    for lp in logprobs:
        assert len(lp.top) == 3 and lp.top[0].token_id == lp.token_id  # greedy takes the most likely
        assert lp.logprob <= 0 and lp.top[0].logprob >= lp.top[1].logprob >= lp.top[2].logprob


async def test_penalties_change_a_repetitive_answer(hf_engine):
    prompt = "1, 2, 3, 4, 5,"
    plain = (await run(hf_engine, prompt, SamplingParams(max_tokens=24, temperature=0.0)))[1]
    penalised = (
        await run(hf_engine, prompt, SamplingParams(max_tokens=24, temperature=0.0, frequency_penalty=2.0))
    )[1]
    assert penalised != plain


async def test_cancellation_frees_the_row(hf_engine):
    stream = hf_engine.generate(
        hf_engine.tokenize("Once upon a time"),
        SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True),
    )
    async for _ in stream:
        break
    assert hf_engine.stats().num_running == 1
    await stream.aclose()
    deadline = time.monotonic() + 30
    while hf_engine.stats().num_running and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert hf_engine.stats().num_running == 0
    # The engine still serves after the abort.
    _, tokens, _ = await run(hf_engine, "Hi", SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    assert len(tokens) == 3


async def test_a_failed_prefill_fails_only_its_requests(hf_engine, monkeypatch):
    batch = hf_engine._scheduler._batch
    real_prefill = batch.prefill

    def failing_prefill(prompts, images=None):
        if any(len(p) == 50 for p in prompts):
            raise RuntimeError("out of memory (simulated)")
        return real_prefill(prompts, images)

    monkeypatch.setattr(batch, "prefill", failing_prefill)
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    running = asyncio.create_task(run(hf_engine, "Once upon a time", params))
    await asyncio.sleep(0.3)
    with pytest.raises(EngineError, match="simulated"):
        await run(hf_engine, [hf_engine.tokenize(" hello")[0]] * 50, params)
    assert len((await running)[1]) == 30  # the sequence already decoding was not disturbed


async def test_more_requests_than_rows_all_finish(hf_engine):
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    results = await asyncio.gather(*(run(hf_engine, p, params) for p in PROMPTS * 3))
    assert all(len(tokens) == 6 for _, tokens, _ in results)
    assert hf_engine.stats().num_running == 0


async def test_context_overflow_is_refused_before_the_first_delta(hf_engine):
    long_prompt = [hf_engine.tokenize(" hello")[0]] * (TEST_MAX_MODEL_LEN - 4)
    with pytest.raises(ContextLengthExceeded):
        hf_engine.generate(long_prompt, SamplingParams(max_tokens=10))
    with pytest.raises(ContextLengthExceeded):
        hf_engine.generate([1] * TEST_MAX_MODEL_LEN, SamplingParams())
    with pytest.raises(InvalidRequest):
        hf_engine.generate([], SamplingParams())
    # Without max_tokens the sequence runs until the context is full, then ends with `length`.
    _, tokens, deltas = await run(hf_engine, long_prompt, SamplingParams(temperature=0.0, ignore_eos=True))
    assert len(tokens) == 4 and deltas[-1].finish_reason == FinishReason.LENGTH


async def test_hf_folder_loads_and_generates_like_model_generate(hf_engine, tmp_path):
    """The safetensors path: a tiny random-weight Llama saved as an HF folder, with the GGUF's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmhost.engines.transformers.engine import TransformersEngine
    from llmhost.models.source import resolve_model

    tokenizer = hf_engine._loaded.tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    source = resolve_model(str(tmp_path))
    assert source.format == "hf"
    eng = TransformersEngine(source.path, model_format="hf", model_name="tiny", gpu="none")
    await eng.start()
    try:
        assert eng.info().max_model_len == 256 and eng.info().chat_template == hf_engine.info().chat_template
        params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
        outs = await asyncio.gather(*(run(eng, p, params) for p in PROMPTS))
        for prompt, (_, tokens, _) in zip(PROMPTS, outs, strict=True):
            expected = await asyncio.to_thread(reference_greedy, eng, eng.tokenize(prompt), 12)
            assert tokens == expected, prompt
    finally:
        await eng.close()


def test_device_choice_without_cuda(monkeypatch):
    """This torch has no CUDA: --gpu auto falls back to the CPU even when NVML sees a GPU, an explicit
    index is refused with a load error, and an index that is not visible names the problem."""
    from llmhost.engines import gpu
    from llmhost.engines.transformers.engine import TransformersEngine
    from llmhost.errors import ModelLoadError

    nvml = [gpu.GpuDevice(0, "GPU-aaaa", "H100", 80 * 2**30, 70 * 2**30)]
    monkeypatch.setattr(gpu, "nvml_devices", lambda: nvml)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def engine(spec: str) -> TransformersEngine:
        return TransformersEngine("unused.gguf", model_format="gguf", model_name="x", gpu=spec)

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert engine("auto")._pick_device(torch) == torch.device("cpu")
    assert engine("none")._pick_device(torch) == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="cannot use CUDA"):
        engine("0")._pick_device(torch)
    with pytest.raises(ModelLoadError, match="no visible GPU with index 1"):
        engine("1")._pick_device(torch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engine("auto")._pick_device(torch) == torch.device("cuda", 0)
