"""llmhost: load a model once and serve every LLM contract your team uses."""

__version__ = "0.1.0"
