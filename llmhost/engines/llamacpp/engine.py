"""The in-process llama.cpp engine: the `Engine` protocol over the continuous-batching scheduler, and
the `ImageEngine` one when a vision model's projector (`--mmproj`, or an `mmproj*.gguf` beside the
model) is loaded (vision.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import Any

from llmhost.engines.base import EngineListener
from llmhost.engines.host_prefix_cache import HostPrefixCache
from llmhost.engines.threaded import DeltaBridge, engine_stats, queue_generation
from llmhost.errors import InvalidRequest, ModelLoadError, ModelNotLoaded
from llmhost.types import Delta, EngineInfo, EngineStats, PromptImage, SamplingParams

from .backend import ContextConfig, LlamaContext, LlamaModel, supports_gpu_offload
from .sampler import check_grammar
from .scheduler import Scheduler
from .sequence import Sequence
from .vision import MtmdImage, VisionEncoder, find_mmproj, image_token_limits

log = logging.getLogger("llmhost.llamacpp")

# llama.cpp sizes a context with a uint32 count of KV cells and indexes it with int32.
_MAX_CONTEXT_CELLS = 2**31 - 1


CPU_SYSFS = Path("/sys/devices/system/cpu")


def default_threads(cpus: set[int] | None = None, sysfs: Path = CPU_SYSFS) -> int:
    """One thread per physical core this process may run on (`cpus`: its affinity), as llama-server's
    default: hyperthread siblings share one core's vector units, which llama.cpp's kernels already keep
    busy, and every extra thread is one more to wait for at each of a step's barriers. Every allowed CPU
    where the topology is not readable."""
    cpus = os.sched_getaffinity(0) if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        try:
            siblings = (sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add(siblings)
    return max(1, len(cores))


def gpu_layers(requested: int | None, *, use_gpu: bool) -> int:
    """Layers to offload (-1: all): `--n-gpu-layers` when given, else all of them on a GPU build unless
    `--gpu none`, none on a CPU build. Asking for layers a CPU build cannot offload is a start-up error."""
    can_offload = supports_gpu_offload()
    if requested is None:
        return -1 if can_offload and use_gpu else 0
    if requested != 0 and not can_offload:
        raise ModelLoadError(
            f"--n-gpu-layers {requested} needs llama-cpp-python built with GPU support, and this build runs "
            'on the CPU only; rebuild it (e.g. CMAKE_ARGS="-DGGML_CUDA=on" .venv/bin/pip install '
            "--force-reinstall --no-cache-dir llama-cpp-python==0.3.36) or leave --n-gpu-layers out"
        )
    return requested


class LlamaCppEngine:
    name = "llama.cpp"

    def __init__(
        self,
        model_path: str,
        *,
        model_name: str,
        max_model_len: int | None = None,
        max_num_seqs: int = 8,
        threads: int | None = None,
        batch_tokens: int = 512,
        flash_attn: bool = True,
        prefix_caching: bool = True,
        kv_unified: bool | None = False,
        batch_wait_s: float = 0.0,
        prefix_cache_ram_bytes: int = 0,
        eval_callback: object | None = None,
        n_gpu_layers: int | None = None,
        use_gpu: bool = True,
        mmproj_path: str | None = None,
        discover_mmproj: bool = False,
        max_image_tokens: int | None = None,
    ) -> None:
        if batch_tokens < max_num_seqs:  # Settings refuses this too; the engine can be built without it
            raise ValueError(f"batch_tokens ({batch_tokens}) must be at least max_num_seqs ({max_num_seqs})")
        self._n_gpu_layers = gpu_layers(n_gpu_layers, use_gpu=use_gpu)
        self._model_path = model_path
        self._model_name = model_name
        self._requested_max_model_len = max_model_len
        self._max_num_seqs = max_num_seqs
        self._threads = threads or default_threads()
        self._batch_tokens = batch_tokens
        self._flash_attn = flash_attn
        self._prefix_caching = prefix_caching
        # The KV layout: one pool (True), a stream per sequence (False), or chosen while serving (None:
        # streams first; kv_layout.py).
        self._kv_unified = kv_unified
        self._batch_wait_s = batch_wait_s  # how long an idle engine waits for returning clients
        # Evicted prefixes saved in host RAM (with prefix caching only): the bound, 0 for none.
        self._prefix_cache_ram_bytes = prefix_cache_ram_bytes
        self._eval_callback = eval_callback  # ggml's per-node callback; tests count forward passes with it
        # The vision projector: the one named (a load error if it fails), else one found beside the model
        # when asked to look (a warning if it fails: the model is then served for text).
        self._mmproj_path = mmproj_path
        self._discover_mmproj = discover_mmproj
        self._max_image_tokens = max_image_tokens
        self._vision: VisionEncoder | None = None
        self._model: LlamaModel | None = None
        self._ctx: LlamaContext | None = None
        self._context_config: ContextConfig | None = None  # what _load created the context with
        self._scheduler: Scheduler | None = None
        self._bridge = DeltaBridge()  # deltas from the engine thread to each consumer
        self._info: EngineInfo | None = None

    @property
    def _device(self) -> str:
        if self._n_gpu_layers == 0:
            return "cpu"
        return "gpu (all layers)" if self._n_gpu_layers < 0 else f"gpu ({self._n_gpu_layers} layers)"

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._scheduler is not None:
            return
        self._bridge.bind(asyncio.get_running_loop())
        await asyncio.to_thread(self._load)
        assert self._model is not None and self._ctx is not None
        host_cache = HostPrefixCache(self._prefix_cache_ram_bytes)
        self._scheduler = Scheduler(
            self._model,
            self._ctx,
            self._bridge.on_outputs,
            host_cache,
            vision=self._vision,
            reuse_prefixes=self._prefix_caching,
            batch_wait_s=self._batch_wait_s,
            make_context=self._make_context if self._switches_layout(self._model) else None,
        )
        self._scheduler.start()

    def _switches_layout(self, model: LlamaModel) -> bool:
        """Whether the KV layout is chosen while serving: left automatic, with prefix reuse (without it no
        cells are shared, and streams always pay) and a model whose saved states move between layouts."""
        if self._kv_unified is not None or not self._prefix_caching:
            return False
        if not model.has_plain_kv_cache:
            log.info("KV layout: a stream per sequence (the model's memory is not one plain KV cache)")
            return False
        return True

    def _load(self) -> None:
        model = LlamaModel(self._model_path, n_gpu_layers=self._n_gpu_layers)
        max_len = self._requested_max_model_len or model.n_ctx_train
        if max_len > model.n_ctx_train:
            log.warning(
                "max_model_len %d is above the model's training context %d; quality may suffer",
                max_len,
                model.n_ctx_train,
            )
        if max_len * self._max_num_seqs > _MAX_CONTEXT_CELLS:
            raise ModelLoadError(
                f"--max-model-len ({max_len}) x --max-num-seqs ({self._max_num_seqs}) KV cells is more than "
                f"llama.cpp takes ({_MAX_CONTEXT_CELLS}); lower one of them"
            )
        self._context_config = ContextConfig(
            n_seq=self._max_num_seqs,
            n_ctx_per_seq=max_len,
            n_batch=self._batch_tokens,
            n_threads=self._threads,
            flash_attn=self._flash_attn,
            eval_callback=self._eval_callback,
            unified_kv=bool(self._kv_unified),
        )
        ctx = LlamaContext(model, self._context_config)
        self._model, self._ctx = model, ctx
        try:
            self._vision = vision = self._load_vision(model)
        except ModelLoadError:  # free what was loaded: a fallback chain may load another model next
            self._close_model()
            raise
        eos_id = model.eos_token_id
        self._info = EngineInfo(
            engine=self.name,
            model_path=self._model_path,
            model_name=self._model_name,
            max_model_len=min(max_len, ctx.n_ctx_per_seq),
            max_num_seqs=self._max_num_seqs,
            device=self._device,
            model_size_bytes=os.path.getsize(self._model_path),
            vocab_size=model.n_vocab,
            chat_template=model.meta("tokenizer.chat_template"),
            bos_token=model.token_text(model.bos_token_id),
            eos_token=model.token_text(eos_id),
            supports_grammar=True,
            supports_prompt_logprobs=True,
            max_token_bytes=model.longest_token_bytes(),
            reuses_prefixes=self._prefix_caching,
            accepts_images=vision is not None,
            image_token_id=vision.image_token_id if vision is not None else None,
        )
        log.info(
            "loaded %s (%s parameters) on %s: max_model_len=%d, max_num_seqs=%d, threads=%d",
            self._model_path,
            model.parameter_count(),
            self._device,
            self._info.max_model_len,
            self._max_num_seqs,
            self._threads,
        )
        if vision is not None:
            log.info("reads images with %s", vision.path)

    def _make_context(self, unified: bool) -> LlamaContext:
        """A context like the first, with the given KV layout (the scheduler closed the one it had)."""
        assert self._model is not None and self._context_config is not None
        self._ctx = None
        self._ctx = LlamaContext(self._model, dataclasses.replace(self._context_config, unified_kv=unified))
        return self._ctx

    def _load_vision(self, model: LlamaModel) -> VisionEncoder | None:
        path = self._mmproj_path
        if path is None and self._discover_mmproj:
            found = find_mmproj(self._model_path)
            path = str(found) if found is not None else None
        if path is None:
            return None
        low, high = image_token_limits(self._model_path, self._max_image_tokens)
        try:
            return VisionEncoder(
                path,
                model,
                n_threads=self._threads,
                use_gpu=self._n_gpu_layers != 0,
                min_tokens=low,
                max_tokens=high,
            )
        except ModelLoadError as exc:
            if self._mmproj_path is not None:
                raise
            log.warning("not reading images: %s found beside the model, but %s", path, exc)
            return None

    async def close(self) -> None:
        self._info = None  # info() and generate() now say "not loaded" until start() runs again
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
            self._scheduler = None
        if self._vision is not None:  # before the model: libmtmd's context refers to it
            await asyncio.to_thread(self._vision.close)
            self._vision = None
        self._close_model()

    def _close_model(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    # -- protocol ----------------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        if self._info is None:
            raise ModelNotLoaded("the model is not loaded yet")
        return self._info

    def stats(self) -> EngineStats:
        s = self._scheduler
        stats = engine_stats(s, s.num_slots if s is not None else 1)
        if s is None:
            return stats
        host_cache = s.host_cache
        return dataclasses.replace(
            stats,
            prefix_cache_ram_bytes=host_cache.num_bytes if host_cache is not None else 0,
            prefix_cache_ram_restores=host_cache.num_restored if host_cache is not None else 0,
            kv_layout_switches=s.num_layout_switches,
        )

    def attach_listener(self, listener: EngineListener) -> None:
        """In-process: the engine never goes down by itself, so there is nothing to tell."""

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self._require_model().tokenize(text, add_special=add_special)

    def detokenize(self, token_ids: Seq[int]) -> str:
        return self._require_model().detokenize(token_ids)

    def prepare_image(self, image: Any) -> PromptImage:
        """One decoded image as the projector reads it (libmtmd's resize and patches; vision.py)."""
        self.info()
        if self._vision is None:
            raise InvalidRequest("the served model reads text only and cannot take images")
        return self._vision.prepare(image)

    def generate(
        self,
        prompt_tokens: Seq[int],
        params: SamplingParams,
        request_id: str | None = None,
        *,
        images: Seq[PromptImage] = (),
    ) -> AsyncIterator[Delta]:
        info = self.info()
        new_sequence: Any = Sequence
        if images:
            self._check_images(prompt_tokens, images, params)
            new_sequence = functools.partial(Sequence, images=tuple(images))
        if params.grammar is not None and self._scheduler is not None:
            check_grammar(self._require_model(), params.grammar)  # a bad grammar fails before queueing
        return queue_generation(
            self._bridge, self._scheduler, info, new_sequence, prompt_tokens, params, request_id
        )

    def _check_images(self, prompt: Seq[int], images: Seq[PromptImage], params: SamplingParams) -> None:
        """Images placed by the pipeline (prepare_image, then one placeholder per token), in order, each
        followed by prompt text (the last token's logits start the answer; an image gives none)."""
        if self._vision is None:
            raise InvalidRequest("the served model reads text only and cannot take images")
        if params.prompt_logprobs is not None:
            raise InvalidRequest(
                "prompt_logprobs cannot be combined with images on the llama.cpp engine",
                param="prompt_logprobs",
            )
        placeholder, end = self._vision.image_token_id, 0
        for image in images:
            if image.offset < end or not isinstance(image.data, MtmdImage):
                raise InvalidRequest("the prompt's images are not placed in order", param="messages")
            end = image.offset + image.num_tokens
            if end >= len(prompt) or any(t != placeholder for t in prompt[image.offset : end]):
                raise InvalidRequest("an image's place in the prompt holds other tokens", param="messages")

    def _require_model(self) -> LlamaModel:
        if self._model is None:
            raise ModelNotLoaded("the model is not loaded yet")
        return self._model
