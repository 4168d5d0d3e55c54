"""Domain exceptions. They carry no HTTP knowledge; `server/errors.py` maps each type to a response."""

from __future__ import annotations


class LlmhostError(Exception):
    """Base of every error llmhost raises on purpose."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(LlmhostError):
    """The request is well-formed but asks for something that cannot be done."""


class ContextLengthExceeded(InvalidRequest):
    def __init__(self, message: str, *, param: str | None = "messages") -> None:
        super().__init__(message, param=param, code="context_length_exceeded")


class ModelNotFound(LlmhostError):
    def __init__(self, name: str) -> None:
        super().__init__(f"The model '{name}' does not exist.", param="model", code="model_not_found")


class NotFound(LlmhostError):
    """What the request names (a stored response) does not exist, or is not the caller's to see."""


class ModelNotLoaded(LlmhostError):
    """The engine is not (yet, or no longer) able to generate."""


class EngineError(LlmhostError):
    """The engine failed while generating; the request cannot be completed."""


class ModelLoadError(LlmhostError):
    """A model could not be found or loaded (raised at start-up)."""


class TemplateError(InvalidRequest):
    """The chat template refused the conversation (e.g. `raise_exception` in the template)."""


class QueueFull(LlmhostError):
    """Admission control refused the request: too much work is already queued."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, code="queue_full")
        self.retry_after_s = retry_after_s


class RequestTimeout(LlmhostError):
    """The request ran past the server's --request-timeout and was cancelled."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"the request did not finish within the server's {timeout_s:g}s request timeout",
            code="request_timeout",
        )


class ClientDisconnected(LlmhostError):
    """The client went away; its work was cancelled (nobody is left to read a response)."""


class SandboxUnavailable(LlmhostError):
    """No isolation the operator accepted works on this machine, so code is not run."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="sandbox_unavailable")


class SandboxBusy(QueueFull):
    """Every execution slot is taken and the wait queue is full."""

    def __init__(self, message: str = "the sandbox is busy: too many executions are queued") -> None:
        super().__init__(message, retry_after_s=1)
        self.code = "sandbox_busy"
