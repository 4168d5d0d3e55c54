"""`serve` plans a GPU engine before launching it (issue 7 §1): refuse, shorten, or go ahead."""

from __future__ import annotations

import json
import logging

import pytest

from llmhost.config import Settings
from llmhost.engines import upstream
from llmhost.engines.gpu import GpuDevice, VisibleGpu
from llmhost.errors import ModelLoadError
from llmhost.models import catalogue
from llmhost.models.preflight import PreflightInput, preflight
from llmhost.models.source import ModelSource

GIB = 1024**3


def given(*gpus_gib: int, tp: int = 1, max_model_len: int | None = None) -> PreflightInput:
    return PreflightInput(tuple(g * GIB for g in gpus_gib), tp, max_model_len, 0.9, None, None)


def test_a_model_that_fits_launches_as_asked():
    assert preflight(catalogue.lookup("Qwen2.5-7B-Instruct"), given(24)) is None


def test_a_model_too_big_is_refused_with_the_plans_alternatives():
    with pytest.raises(ModelLoadError) as refused:
        preflight(catalogue.lookup("Qwen2.5-32B-Instruct"), given(24, 24, tp=2))
    words = refused.value.message
    assert "does not fit" in words and "no memory for the KV cache" in words
    assert "--quantization awq (TP=2): fits" in words


def test_an_unset_context_is_shortened_to_what_fits(caplog):
    # Llama-3.1-8B: 128 KiB of KV per token (32 layers × 8 KV heads × 128 × 2 × bf16); 131072 tokens
    # need 16 GiB, and a 24 GiB GPU has ~4 GiB left after the weights and the overhead.
    with caplog.at_level(logging.WARNING, logger="llmhost.plan"):
        shortened = preflight(catalogue.lookup("Llama-3.1-8B-Instruct"), given(24))
    assert shortened is not None and 16_384 < shortened < 131_072
    assert f"serving with --max-model-len {shortened}" in caplog.text


def test_an_explicit_context_that_does_not_fit_is_refused_not_changed():
    with pytest.raises(ModelLoadError, match="fits only with a shorter context.*--max-model-len"):
        preflight(catalogue.lookup("Llama-3.1-8B-Instruct"), given(24, max_model_len=131_072))


def _llama_8b_folder(tmp_path):
    config = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "tokenizer.json").write_text("{}")
    return ModelSource(tmp_path, "hf", "llama-8b")


def _one_gpu(gib: int):
    return [[VisibleGpu(0, GpuDevice(0, "GPU-test", "Test GPU", gib * GIB, gib * GIB))]]


def test_supervised_vllm_on_a_gpu_gets_the_planned_context(tmp_path, monkeypatch):
    source = _llama_8b_folder(tmp_path)
    monkeypatch.setattr(upstream, "replica_gpu_sets", lambda *a, **k: _one_gpu(24))
    engine = upstream.supervised_engine(Settings.load(), source, "llama", "vllm")
    argv = upstream.KINDS["vllm"].build(engine.backends[0].spec, 8000)
    planned = int(argv[argv.index("--max-model-len") + 1])
    assert 16_384 < planned < 131_072
    monkeypatch.setattr(upstream, "replica_gpu_sets", lambda *a, **k: _one_gpu(12))
    with pytest.raises(ModelLoadError, match="does not fit"):
        upstream.supervised_engine(Settings.load(), source, "llama", "vllm")
    # The operator can take the engine's own word instead.
    unplanned = upstream.supervised_engine(Settings.load(plan_gpu_engines=False), source, "llama", "vllm")
    assert "--max-model-len" not in upstream.KINDS["vllm"].build(unplanned.backends[0].spec, 8000)
