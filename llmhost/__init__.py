"""llmhost: load a model once and serve every LLM contract your team uses."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmhost")  # one source: pyproject.toml's project.version
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
