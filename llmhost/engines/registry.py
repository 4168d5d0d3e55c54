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
            "model folder (the transformers engine is not available yet)"
        )
    return LlamaCppEngine(
        str(source.path),
        model_name=name,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        threads=settings.threads,
        batch_tokens=settings.max_num_batched_tokens,
        flash_attn=settings.flash_attn,
    )


ENGINES: dict[str, Callable[[Settings, ModelSource, str], Engine]] = {
    "llama.cpp": _llamacpp,
}


def create_engine(settings: Settings, source: ModelSource, name: str, engine: str = "llama.cpp") -> Engine:
    try:
        factory = ENGINES[engine]
    except KeyError:
        raise ModelLoadError(f"unknown engine '{engine}'; known: {', '.join(ENGINES)}") from None
    return factory(settings, source, name)
