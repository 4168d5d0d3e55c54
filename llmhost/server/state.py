"""What the routes of every face share: the engine, the chat template and the load status."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmhost.config import Settings
from llmhost.conversation.template import ChatTemplate
from llmhost.engines.base import Engine
from llmhost.errors import ModelNotFound, ModelNotLoaded

log = logging.getLogger("llmhost.server")


@dataclass
class ServerState:
    settings: Settings
    engine: Engine
    served_names: list[str]
    template: ChatTemplate | None = None
    is_loaded: bool = False
    load_error: str | None = None
    started_s: float = field(default_factory=time.time)
    on_load_failure: Callable[[BaseException], None] | None = None
    metrics_registry: Any = None  # prometheus CollectorRegistry, set by create_app

    async def load(self) -> None:
        """Start the engine and read its chat template. Failures are recorded, then reported."""
        try:
            await self.engine.start()
            info = self.engine.info()
            self.template = ChatTemplate.for_engine(
                info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token
            )
            self.is_loaded = True
            log.info(
                "model '%s' ready (engine %s, device %s)", self.served_names[0], info.engine, info.device
            )
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading the model failed: %s", self.load_error)
            if self.on_load_failure is not None:
                self.on_load_failure(exc)

    def require_loaded(self) -> ChatTemplate:
        if not self.is_loaded or self.template is None:
            raise ModelNotLoaded(self.load_error or "the model is still loading; retry shortly")
        return self.template

    def chat_prompt_tokens(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        template_kwargs: dict[str, Any] | None = None,
    ) -> list[int]:
        """Render a conversation with the model's template and tokenize it (specials parsed)."""
        template = self.require_loaded()
        prompt = template.render(
            messages, add_generation_prompt=add_generation_prompt, **(template_kwargs or {})
        )
        return self.engine.tokenize(prompt)

    def resolve_model(self, requested: str | None) -> str:
        """The name to report for a request: any served alias is accepted, anything else is a 404."""
        if requested is None or requested in self.served_names:
            return self.served_names[0]
        raise ModelNotFound(requested)
