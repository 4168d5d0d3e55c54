"""Engine name -> factory. Heavy libraries are imported inside the factory, so `llmhost --help`
and the faces never pay for them."""

from __future__ import annotations

from collections.abc import Callable

from llmhost.config import Settings
from llmhost.engines.base import Engine
from llmhost.errors import ModelLoadError
from llmhost.models.source import ModelSource


def _llamacpp(settings: Settings, source: ModelSource, name: str) -> Engine:
    from llmhost.engines.llamacpp.engine import LlamaCppEngine

    if source.format != "gguf":
        raise ModelLoadError(
            f"the llama.cpp engine reads GGUF files; {source.path} is a '{source.format}' "
            "model folder (--engine transformers reads those)"
        )
    return LlamaCppEngine(
        str(source.path),
        model_name=name,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        threads=settings.threads,
        batch_tokens=settings.max_num_batched_tokens,
        flash_attn=settings.flash_attn,
        prefix_caching=settings.enable_prefix_caching,
        kv_unified=settings.kv_unified,
        batch_wait_s=settings.batch_wait_ms / 1000,
        prefix_cache_ram_bytes=settings.prefix_cache_ram_mb * 2**20,
        n_gpu_layers=settings.n_gpu_layers,
        use_gpu=settings.gpu.strip() not in ("none", "cpu"),
        mmproj_path=None if settings.mmproj in (None, "none") else settings.mmproj,
        discover_mmproj=settings.mmproj is None,
        max_image_tokens=settings.max_image_tokens,
    )


def _transformers(settings: Settings, source: ModelSource, name: str) -> Engine:
    """HF folders and GGUF files through transformers (torch is imported when the engine starts)."""
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelLoadError(
            f"the transformers engine needs {' and '.join(missing)}: pip install 'llmhost[transformers]'"
        )
    from llmhost.engines.transformers.engine import TransformersEngine

    return TransformersEngine(
        source.path,
        model_format=source.format,
        model_name=name,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        threads=settings.threads,
        dtype=settings.dtype,
        gpu=settings.gpu,
        max_image_tokens=settings.max_image_tokens,
        prefix_cache_bytes=settings.prefix_cache_ram_mb * 2**20 if settings.enable_prefix_caching else 0,
        batch_wait_s=settings.batch_wait_ms / 1000,
    )


def _supervised(kind: str) -> Callable[[Settings, ModelSource, str], Engine]:
    """vLLM, SGLang, LMDeploy, llama.cpp's llama-server, llama-cpp-python's server: a supervised child
    server (llmhost/engines/upstream)."""

    def factory(settings: Settings, source: ModelSource, name: str) -> Engine:
        from llmhost.engines.upstream import supervised_engine

        return supervised_engine(settings, source, name, kind)

    return factory


ENGINES: dict[str, Callable[[Settings, ModelSource, str], Engine]] = {
    "llama.cpp": _llamacpp,
    "vllm": _supervised("vllm"),
    "sglang": _supervised("sglang"),
    "lmdeploy": _supervised("lmdeploy"),
    # llama.cpp's native server binary. Before, this name ran llama-cpp-python's Python server (now
    # "llama-cpp-python"): configs that say llama-server get the native one, with a note if it is missing.
    "llama-server": _supervised("llama-server"),
    "llama-cpp-python": _supervised("llama-cpp-python"),
    "transformers": _transformers,
}


def create_engine(settings: Settings, source: ModelSource, name: str, engine: str = "llama.cpp") -> Engine:
    try:
        factory = ENGINES[engine]
    except KeyError:
        raise ModelLoadError(f"unknown engine '{engine}'; known: {', '.join(ENGINES)}") from None
    return factory(settings, source, name)


def create_served_engine(settings: Settings) -> tuple[Engine, list[str]]:
    """The engine `llmhost serve` runs, and its served names, from the settings: `--engine-url` attaches
    to a running server; one `--engine` with one `--model` is that engine; several engines or
    `--fallback-model`s make a fallback chain over (model × engine), tried in that order at load time."""
    from llmhost.engines.fallback import Candidate, FallbackEngine
    from llmhost.models.source import resolve_model

    engines = list(getattr(settings, "engine", None) or ["llama.cpp"])
    for e in engines:
        if e not in ENGINES:
            raise ModelLoadError(f"unknown engine '{e}'; known: {', '.join(ENGINES)}")
    models: list[str | None] = [settings.model, *getattr(settings, "fallback_model", [])]
    names = list(settings.served_model_name) or [_default_name(models)]
    if getattr(settings, "engine_url", None):
        from llmhost.engines.upstream import attach_engine

        return attach_engine(settings, resolve_model(settings.model), names[0]), names
    if len(engines) == 1 and len(models) == 1:
        return create_engine(settings, resolve_model(settings.model), names[0], engines[0]), names

    def build(candidate: Candidate) -> Engine:
        return create_engine(settings, resolve_model(candidate.model), names[0], candidate.engine)

    chain = [Candidate(e, m) for m in models for e in engines]
    return FallbackEngine(chain, build), names


def _default_name(models: list[str | None]) -> str:
    """The first model's default name; a broken first model still names the service (clients keep
    using the name they know while a fallback serves)."""
    from pathlib import Path

    from llmhost.models.source import resolve_model

    try:
        return resolve_model(models[0]).default_name
    except ModelLoadError:
        path = Path(models[0] or "model")
        return path.stem if path.suffix.lower() == ".gguf" else path.name  # "Qwen2.5-3B" has a "suffix"
