"""What the routes of every face share: the engine and its load status, the chat template, and the
generation service every face sends its requests through."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from llmhost.config import Settings
from llmhost.conversation.template import ChatTemplate
from llmhost.engines.base import Engine
from llmhost.errors import ModelNotFound, ModelNotLoaded
from llmhost.media import ImageLimits
from llmhost.pipeline import GenerationService
from llmhost.pipeline.admission import Admission
from llmhost.server.metrics import ServerMetrics
from llmhost.tools.sandbox import Sandbox
from llmhost.types import SamplingParams

log = logging.getLogger("llmhost.server")


@dataclass
class ServerState:
    settings: Settings
    engine: Engine
    served_names: list[str]
    # True when the operator passed --served-model-name; otherwise the one default name is served and
    # any `model` value is accepted (seed 000's client sends a fixed name its server ignored).
    has_explicit_names: bool = False
    template: ChatTemplate | None = None
    is_loaded: bool = False
    load_error: str | None = None
    started_s: float = field(default_factory=time.time)
    on_load_failure: Callable[[BaseException], None] | None = None
    is_ready: bool = False  # a one-token generation succeeded since the engine last (re)started
    is_unloaded: bool = False  # unloaded on request (POST /api/v1/model/unload), not loading
    # Set while a loaded engine cannot serve by itself (a supervised engine server died and is being
    # restarted); requests get 503 with this reason and /health says so. None when it can serve.
    engine_down_reason: str | None = None
    sandbox: Sandbox | None = None  # the app's code sandbox (its mode is shown in /health)
    tool_http: httpx.AsyncClient | None = None  # the app's client to remote tool servers (the code loop)
    admission: Admission = field(init=False)
    metrics: ServerMetrics = field(init=False)
    generation: GenerationService = field(init=False)  # the one path from a request to the engine
    # Serialises load and unload, so concurrent callers (start-up, POST /api/v1/model/load) load once.
    _lifecycle_lock: asyncio.Lock = field(init=False, repr=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        # Until the engine says how many sequences it runs at once (load_model), --max-num-seqs.
        self.admission = Admission(self.settings.max_num_seqs, self.settings.max_queued_requests)
        self.metrics = ServerMetrics(self.served_names[0], self.engine.stats)
        self.generation = GenerationService(
            self.engine,
            self.require_loaded,
            self.admission,
            self.metrics,
            max_messages=self.settings.max_messages,
            timeout_s=self.settings.request_timeout,
            image_limits=ImageLimits.from_settings(self.settings),
        )
        self.engine.attach_listener(self)  # an engine that can go down and come back tells us

    # -- what such an engine tells the server (llmhost/engines/upstream/engine.py EngineListener) -----
    def engine_down(self, reason: str) -> None:
        self.engine_down_reason = reason
        self.is_ready = False
        log.error("the engine cannot serve: %s", reason)

    def engine_up(self) -> None:
        self.engine_down_reason = None
        self.is_ready = True  # it passed its health check again
        log.warning("the engine serves again")

    def engine_restarted(self, label: str) -> None:
        self.metrics.engine_restarted(label)

    async def load(self) -> None:
        """The start-up load: failures are recorded, then reported to `on_load_failure`."""
        try:
            await self.load_model()
        except Exception as exc:
            if self.on_load_failure is not None:
                self.on_load_failure(exc)

    async def load_model(self) -> bool:
        """Start the engine, read its chat template and prove it generates. Returns False when it was
        already loaded. A failure is recorded in `load_error` and raised."""
        async with self._lifecycle_lock:
            if self.is_loaded:
                return False
            try:
                await self.engine.start()
                info = self.engine.info()
                # An engine spread over replicas runs --max-num-seqs on each: its info says the total.
                self.admission.resize(info.max_num_seqs, self.settings.max_queued_requests)
                tokens = {"bos_token": info.bos_token, "eos_token": info.eos_token}
                parser = self.settings.tool_call_parser
                if self.settings.chat_template:  # the operator's template wins over the model's
                    self.template = ChatTemplate.from_file(
                        self.settings.chat_template, **tokens, tool_call_parser=parser
                    )
                else:
                    self.template = ChatTemplate.for_engine(
                        info.chat_template, **tokens, tool_call_parser=parser
                    )
                log.info("tool calls are read in the %s format", self.template.tool_call_format.name)
                self.is_loaded = True
                await self._check_generation()
                log.info(
                    "model '%s' ready (engine %s, device %s)", self.served_names[0], info.engine, info.device
                )
            except Exception as exc:
                self.is_loaded = False
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.error("loading the model failed: %s", self.load_error)
                raise
            self.load_error = None
            self.is_unloaded = False
            return True

    async def unload_model(self) -> bool:
        """Stop the engine and free the model (requests in flight fail); `load_model` loads it again.
        Returns False when it was not loaded."""
        async with self._lifecycle_lock:
            if not self.is_loaded:
                return False
            self.is_loaded = False  # new requests get 503 from here on
            self.is_ready = False
            self.is_unloaded = True
            self.template = None
            await self.engine.close()
            log.info("model '%s' unloaded", self.served_names[0])
            return True

    async def _check_generation(self) -> None:
        """Readiness means "can generate", not "process is up": generate one token to prove it."""
        tokens = self.engine.tokenize("Hello")
        async for _ in self.engine.generate(tokens, SamplingParams(max_tokens=1, temperature=0.0)):
            pass
        self.is_ready = True

    def require_loaded(self) -> ChatTemplate:
        if self.engine_down_reason is not None and self.is_loaded:
            raise ModelNotLoaded(f"the engine is restarting: {self.engine_down_reason}")
        if not self.is_loaded or self.template is None:
            if self.is_unloaded and self.load_error is None:
                raise ModelNotLoaded("the model was unloaded; POST /api/v1/model/load loads it again")
            raise ModelNotLoaded(self.load_error or "the model is still loading; retry shortly")
        return self.template

    def resolve_model(self, requested: str | None) -> str:
        """The name to report for a request. Any served alias is accepted; another name is a 404 when
        the names were configured explicitly, and accepted when only the default name is served."""
        if requested is None or requested in self.served_names or not self.has_explicit_names:
            return self.served_names[0]
        raise ModelNotFound(requested)
