"""Tokenizing on llmhost's side of an upstream engine.

llmhost renders every prompt with the model's own chat template and checks its length before sending
it, so it needs the model's vocabulary without its weights: a vocab-only llama.cpp load for a GGUF
(fast, a few MB of memory), or `tokenizers` over `tokenizer.json` for an HF folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llmhost.errors import ModelLoadError
from llmhost.models.source import ModelSource

log = logging.getLogger("llmhost.upstream")


@dataclass(frozen=True)
class VocabInfo:
    vocab_size: int
    context_length: int | None  # the model's training context, when the files say
    chat_template: str | None
    bos_token: str
    eos_token: str
    size_bytes: int  # the model's files on disk


class LocalTokenizer(Protocol):
    info: VocabInfo

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]: ...

    def detokenize(self, token_ids: Sequence[int]) -> str: ...

    def prompt_text(self, token_ids: Sequence[int]) -> str:
        """Token ids back to prompt text with special tokens written out (`<|im_start|>`), for servers
        that take the prompt as text and parse special-token text themselves."""
        ...

    def close(self) -> None: ...


class GgufTokenizer:
    """The GGUF's vocabulary through llama.cpp, loaded with `vocab_only` (no weights)."""

    def __init__(self, path: Path) -> None:
        from llmhost.engines.llamacpp.backend import LlamaModel

        self._model = LlamaModel(str(path), vocab_only=True)
        m = self._model
        arch = m.meta("general.architecture")
        ctx = m.meta(f"{arch}.context_length") if arch else None
        self.info = VocabInfo(
            vocab_size=m.n_vocab,
            context_length=int(ctx) if ctx and ctx.isdigit() else None,
            chat_template=m.meta("tokenizer.chat_template"),
            bos_token=m.token_text(m.bos_token_id),
            eos_token=m.token_text(m.eos_token_id),
            size_bytes=path.stat().st_size,
        )

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self._model.tokenize(text, add_special=add_special)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._model.detokenize(token_ids)

    def prompt_text(self, token_ids: Sequence[int]) -> str:
        import ctypes

        import llama_cpp as C

        ids = (C.llama_token * len(token_ids))(*token_ids)
        size = 8 * len(token_ids) + 64
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = C.llama_detokenize(self._model.vocab, ids, len(token_ids), buf, size, False, True)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", "replace")
            size = -n + 1  # too small: llama.cpp says how much it needs
        raise RuntimeError("llama_detokenize failed")

    def close(self) -> None:
        self._model.close()


class HfTokenizer:
    """An HF model folder's `tokenizer.json` (through the `tokenizers` package) and its configs."""

    def __init__(self, folder: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ModelLoadError(
                "an upstream engine serving an HF model folder needs the `tokenizers` package here "
                "(pip install tokenizers) to render and count prompts"
            ) from None
        if not (folder / "tokenizer.json").is_file():
            raise ModelLoadError(f"{folder} has no tokenizer.json (needed to tokenize prompts here)")
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = _read_json(folder / "tokenizer_config.json")
        model_config = _read_json(folder / "config.json")
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": …}, …]
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        jinja = folder / "chat_template.jinja"
        if template is None and jinja.is_file():
            template = jinja.read_text()
        ctx = model_config.get("max_position_embeddings")
        self.info = VocabInfo(
            vocab_size=self._tok.get_vocab_size(with_added_tokens=True),
            context_length=int(ctx) if isinstance(ctx, int) else None,
            chat_template=template if isinstance(template, str) else None,
            bos_token=_token_str(config.get("bos_token")),
            eos_token=_token_str(config.get("eos_token")),
            size_bytes=sum(f.stat().st_size for f in folder.iterdir() if f.is_file()),
        )

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        # Special-token text in a rendered prompt is parsed as the special token (added tokens).
        return self._tok.encode(text, add_special_tokens=add_special).ids

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._tok.decode(list(token_ids), skip_special_tokens=True)

    def prompt_text(self, token_ids: Sequence[int]) -> str:
        return self._tok.decode(list(token_ids), skip_special_tokens=False)

    def close(self) -> None:
        pass


def load_tokenizer(source: ModelSource) -> LocalTokenizer:
    if source.format == "gguf":
        return GgufTokenizer(source.path)
    return HfTokenizer(source.path)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("could not read %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _token_str(value: object) -> str:
    if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, …}
        value = value.get("content")
    return value if isinstance(value, str) else ""
