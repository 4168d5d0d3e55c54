"""The transformers engine: the `Engine` protocol over a padded-batch scheduler on its own thread.

It loads an HF model folder (safetensors) or a GGUF file (dequantised by transformers' GGUF loader) on
the CPU or one CUDA GPU. It is the fallback when faster engines do not load, and the path for models
llama.cpp cannot read; every face sees the same deltas, stops, usage and logprobs as from llama.cpp.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
from collections.abc import AsyncIterator
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmhost.engines.base import EngineListener
from llmhost.engines.gpu import choose_gpus
from llmhost.engines.threaded import DeltaBridge, engine_stats, queue_generation
from llmhost.errors import InvalidRequest, ModelLoadError, ModelNotLoaded
from llmhost.types import Delta, EngineInfo, EngineStats, PromptImage, SamplingParams

log = logging.getLogger("llmhost.transformers")

if TYPE_CHECKING:  # torch and transformers load only when the engine starts
    from .loader import LoadedModel
    from .scheduler import Scheduler


class TransformersEngine:
    name = "transformers"

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_format: str,
        model_name: str,
        max_model_len: int | None = None,
        max_num_seqs: int = 8,
        threads: int | None = None,
        dtype: str = "auto",
        gpu: str = "auto",
        prefill_tokens: int = 2048,
        max_image_tokens: int | None = None,
        prefix_cache_bytes: int = 0,
        batch_wait_s: float = 0.0,
    ) -> None:
        self._model_path = Path(model_path)
        self._model_format = model_format
        self._model_name = model_name
        self._requested_max_model_len = max_model_len
        self._max_num_seqs = max_num_seqs
        self._threads = threads
        self._dtype = dtype
        self._gpu = gpu
        self._prefill_tokens = prefill_tokens
        self._max_image_tokens = max_image_tokens
        # Finished sequences' KV kept in host RAM for prompts that start the same way; 0: none.
        self._prefix_cache_bytes = prefix_cache_bytes
        self._batch_wait_s = batch_wait_s  # how long an idle engine waits for returning clients
        self._loaded: LoadedModel | None = None
        self._table: list[bytes] = []
        self._scheduler: Scheduler | None = None
        self._bridge = DeltaBridge()  # deltas from the engine thread to each consumer
        self._info: EngineInfo | None = None
        # A fast tokenizer is one Rust object: calls from several threads at once can fail ("Already
        # borrowed"), so every use goes through this lock.
        self._tokenizer_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._scheduler is not None:
            return
        self._bridge.bind(asyncio.get_running_loop())
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch

        from llmhost.engines.host_prefix_cache import HostPrefixCache

        from .loader import load, token_bytes_table
        from .scheduler import Scheduler

        if self._threads:
            torch.set_num_threads(self._threads)
        device = self._pick_device(torch)
        loaded = load(
            self._model_path, self._model_format, device, self._dtype, max_image_tokens=self._max_image_tokens
        )
        limit = loaded.max_position_embeddings
        max_len = self._requested_max_model_len or limit or 4096
        if limit and max_len > limit:
            log.warning(
                "max_model_len %d is above the model's position limit %d; quality may suffer", max_len, limit
            )
        vocab_size = int(loaded.model.get_output_embeddings().weight.shape[0])
        self._table = token_bytes_table(loaded.tokenizer, vocab_size)
        tokenizer = loaded.tokenizer
        self._loaded = loaded
        self._info = EngineInfo(
            engine=self.name,
            model_path=str(self._model_path),
            model_name=self._model_name,
            max_model_len=max_len,
            max_num_seqs=self._max_num_seqs,
            device=str(device),
            model_size_bytes=loaded.size_bytes,
            vocab_size=vocab_size,
            chat_template=loaded.chat_template,
            bos_token=tokenizer.bos_token or "",
            eos_token=tokenizer.eos_token or "",
            accepts_images=loaded.vision is not None,
            image_token_id=loaded.vision.image_token_id if loaded.vision is not None else None,
        )
        self._scheduler = Scheduler(
            loaded,
            self._table,
            self._bridge.on_outputs,
            max_num_seqs=self._max_num_seqs,
            prefill_tokens=self._prefill_tokens,
            prefix_cache=HostPrefixCache(self._prefix_cache_bytes),
            batch_wait_s=self._batch_wait_s,
        )
        reuses_prefixes = self._scheduler.prefix_cache is not None
        self._info = dataclasses.replace(self._info, reuses_prefixes=reuses_prefixes)
        self._scheduler.start()
        log.info(
            "loaded %s with transformers on %s (%s): max_model_len=%d, max_num_seqs=%d%s",
            self._model_path,
            device,
            str(loaded.dtype).removeprefix("torch."),
            max_len,
            self._max_num_seqs,
            ", reads images" if loaded.vision is not None else "",
        )

    def _pick_device(self, torch: Any) -> Any:
        try:
            choice = choose_gpus(self._gpu, count=1)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        if not choice.cuda_indices:
            log.info("transformers engine on the CPU: %s", choice.reason)
            return torch.device("cpu")
        if not torch.cuda.is_available():
            if self._gpu == "auto":
                log.warning("NVML sees a GPU but this torch build has no CUDA; using the CPU")
                return torch.device("cpu")
            raise ModelLoadError(
                f"--gpu {self._gpu}: this torch build cannot use CUDA (torch {torch.__version__})"
            )
        if len(choice.cuda_indices) > 1:
            log.warning("the transformers engine uses one GPU; taking cuda:%d", choice.cuda_indices[0])
        log.info("transformers engine on cuda:%d: %s", choice.cuda_indices[0], choice.reason)
        return torch.device("cuda", choice.cuda_indices[0])

    async def close(self) -> None:
        self._info = None  # info() and generate() now say "not loaded" until start() runs again
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
            self._scheduler = None
        if self._loaded is not None:
            is_cuda = self._loaded.device.type == "cuda"
            self._loaded = None
            if is_cuda:
                import torch

                torch.cuda.empty_cache()

    # -- protocol ----------------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        if self._info is None:
            raise ModelNotLoaded("the model is not loaded yet")
        return self._info

    def stats(self) -> EngineStats:
        stats = engine_stats(self._scheduler, self._max_num_seqs)
        store = self._scheduler.prefix_cache if self._scheduler is not None else None
        if store is None:
            return stats
        return dataclasses.replace(
            stats, prefix_cache_ram_bytes=store.num_bytes, prefix_cache_ram_restores=store.num_restored
        )

    def attach_listener(self, listener: EngineListener) -> None:
        """In-process: the engine never goes down by itself, so there is nothing to tell."""

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        loaded = self._require_loaded()
        with self._tokenizer_lock:
            return list(loaded.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def detokenize(self, token_ids: Seq[int]) -> str:
        from .loader import detokenize

        self._require_loaded()
        return detokenize(self._table, token_ids)

    def prepare_image(self, image: Any) -> PromptImage:
        """One decoded image as the model reads it (resized to its pixel budget, cut into patches)."""
        vision = self._require_loaded().vision
        if vision is None:
            raise InvalidRequest("the served model reads text only and cannot take images")
        return vision.prepare_image(image)

    def generate(
        self,
        prompt_tokens: Seq[int],
        params: SamplingParams,
        request_id: str | None = None,
        *,
        images: Seq[PromptImage] = (),
    ) -> AsyncIterator[Delta]:
        from .scheduler import Sequence

        info = self.info()
        new_sequence: Any = Sequence
        if images:
            vision = self._require_loaded().vision
            if vision is None:
                raise InvalidRequest("the served model reads text only and cannot take images")
            vision.check_prompt(list(prompt_tokens), tuple(images))
            new_sequence = functools.partial(Sequence, images=tuple(images))
        if params.grammar is not None:  # refused rather than silently answered unconstrained
            raise InvalidRequest(
                "structured outputs (response_format json_object/json_schema) need the llama.cpp engine "
                "or a vLLM/SGLang/llama-server upstream; the transformers engine does not constrain output",
                param="response_format",
            )
        return queue_generation(
            self._bridge, self._scheduler, info, new_sequence, prompt_tokens, params, request_id
        )

    def _require_loaded(self) -> LoadedModel:
        if self._loaded is None:
            raise ModelNotLoaded("the model is not loaded yet")
        return self._loaded
