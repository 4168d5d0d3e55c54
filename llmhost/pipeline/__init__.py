"""The generation pipeline between faces and engines (see `service.py` for the path a request takes).

A package of its own, below faces and above engines: faces import it, it imports engines' protocol and
the conversation layer, and it knows nothing of HTTP routes or wire formats.
"""

from llmhost.pipeline.prompts import ChatInput, PreparedPrompt, PromptInput, TextInput, TokenInput
from llmhost.pipeline.service import Driver, Fit, Generation, GenerationRequest, GenerationService

__all__ = [
    "ChatInput",
    "Driver",
    "Fit",
    "Generation",
    "GenerationRequest",
    "GenerationService",
    "PreparedPrompt",
    "PromptInput",
    "TextInput",
    "TokenInput",
]
