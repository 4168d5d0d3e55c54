"""GGUF → Hugging Face safetensors folder, converted once and cached (for engines that cannot read GGUF,
such as vLLM 0.32).

The weights go through transformers' own GGUF loader (dequantised) and `save_pretrained`; the tokenizer
is saved next to them and the GGUF's chat template is written into `tokenizer_config.json`, so the folder
serves exactly like the GGUF did. The result lives in a cache folder keyed by the GGUF's path, size and
modification time, and is reused until the file changes. A conversion is written to a temporary folder
and renamed into place, so a crash or a concurrent conversion never leaves a half-written model behind.

This module imports only the standard library at import time: the conversion itself needs torch,
transformers and gguf, which may live in another venv than llmhost (vLLM's). `ensure_converted` then
runs this file with that venv's interpreter:

    PYTHONPATH=/path/to/llmhost-root python -m llmhost.models.convert MODEL.gguf OUTDIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("llmhost.convert")

MARKER = "llmhost-converted.json"  # written last: a folder without it is not a finished conversion
_ENV_CACHE = "LLMHOST_CONVERTED_DIR"


class ConversionError(Exception):
    """The GGUF could not be converted (missing libraries, an architecture transformers cannot read…)."""


def default_cache_dir() -> Path:
    """`$LLMHOST_CONVERTED_DIR`, else `$XDG_CACHE_HOME/llmhost/converted` (`~/.cache/llmhost/converted`)."""
    if os.environ.get(_ENV_CACHE):
        return Path(os.environ[_ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmhost" / "converted"


def cache_key(gguf: Path) -> str:
    """Same file (path, size, mtime) → same key; a replaced or edited file gets a new conversion."""
    path = gguf.resolve()
    st = path.stat()
    return hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]


def converted_dir(gguf: Path, cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / cache_key(gguf)


def is_converted(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def ensure_converted(
    gguf: str | Path,
    *,
    python: str | None = None,
    cache_dir: Path | None = None,
    timeout_s: float = 1800.0,
) -> Path:
    """The HF folder for `gguf`, converting it first unless the cache already holds it.

    `python` is the interpreter that has torch + transformers + gguf (e.g. vLLM's venv); by default the
    current one. The conversion runs in a child process either way: it loads a whole model with torch,
    and that memory should go back when it is done, not stay in the server's process."""
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise ConversionError(f"GGUF file not found: {gguf}")
    target = converted_dir(gguf, cache_dir)
    if is_converted(target):
        log.info("using the converted model %s (from %s)", target, gguf.name)
        return target
    python = python or sys.executable
    log.warning(
        "converting %s to an HF safetensors folder in %s with %s (once; reused next time)",
        gguf,
        target,
        python,
    )
    started = time.monotonic()
    # `-m` with llmhost's own root on PYTHONPATH works in a venv that does not have llmhost installed; running
    # this file by path would not, since its folder (holding `inspect.py`) would shadow the standard library.
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    cmd = [python, "-m", "llmhost.models.convert", str(gguf), str(target)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
    except FileNotFoundError:
        raise ConversionError(f"the Python to convert {gguf.name} with does not exist: {python}") from None
    except subprocess.TimeoutExpired:
        raise ConversionError(f"converting {gguf.name} took longer than {timeout_s:g}s") from None
    if done.returncode != 0 or not is_converted(target):
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ConversionError(f"converting {gguf.name} with {python} failed ({done.returncode}):\n{tail}")
    log.warning("converted %s in %.1fs: %s", gguf.name, time.monotonic() - started, target)
    return target


def engine_model_path(source: Any, reads: tuple[str, ...], python: str | None = None) -> Path:
    """The model path to hand an engine that reads the formats `reads` ("hf", "gguf"): the source itself
    when it can, else (a GGUF for an engine that reads only HF folders, vLLM 0.32) the cached conversion,
    made with `python` (the engine's own interpreter, which has torch + transformers + gguf).

    `source` is a `llmhost.models.source.ModelSource`. Failures raise `ModelLoadError`, so a fallback
    chain moves on to its next candidate and reports why."""
    from llmhost.errors import ModelLoadError

    if source.format in reads:
        return Path(source.path)
    if source.format == "gguf" and "hf" in reads:
        try:
            return ensure_converted(source.path, python=python)
        except ConversionError as exc:
            raise ModelLoadError(str(exc)) from None
    kinds = " or ".join(reads)
    raise ModelLoadError(f"{source.path} is a '{source.format}' model; this engine reads {kinds}")


# -- the conversion itself: runs where torch + transformers + gguf are installed ------------------------


def convert(gguf: Path, out_dir: Path, *, dtype: str | None = None) -> Path:
    """Convert `gguf` into `out_dir` (atomically: a temporary sibling folder renamed into place).

    `dtype` (e.g. "float32", "bfloat16") is the dtype the weights are saved in; default: what the GGUF
    loader produces. Returns `out_dir`; an already finished `out_dir` is left as it is."""
    if is_converted(out_dir):
        return out_dir
    try:
        import gguf as _gguf  # noqa: F401  (transformers' GGUF loader needs it; fail early with a clear message)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConversionError(
            f"converting a GGUF needs torch, transformers and gguf in {sys.executable} ({exc}); "
            "scripts/install-vllm-cpu.sh installs them into .venv-vllm"
        ) from exc

    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConversionError(f"{out_dir} exists and is not a finished conversion; give a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished folder is an ordinary, readable cache entry
    try:
        kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # A GGUF-loaded model carries its quantizer ("GGUF ... is not serializable"); the weights are
        # already dequantised, so drop it and save plain tensors that any HF reader (vLLM) loads.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(str(tmp), safe_serialization=True)
        template = _gguf_chat_template(gguf)
        if template and not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = template
        tokenizer.save_pretrained(str(tmp))
        _template_into_tokenizer_config(tmp, template or getattr(tokenizer, "chat_template", None))
        st = gguf.stat()
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "source": str(gguf.resolve()),
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                    "architecture": type(model).__name__,
                    "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
            )
        )
        try:
            if out_dir.is_dir():
                out_dir.rmdir()  # empty (checked above): rename() needs the name free
            tmp.rename(out_dir)
        except OSError:
            if not is_converted(out_dir):  # not a concurrent conversion that won the race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _gguf_chat_template(gguf: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _template_into_tokenizer_config(folder: Path, template: str | None) -> None:
    # transformers 5 writes the template to chat_template.jinja only; older readers (and llmhost's own
    # tokenizer for upstream engines) look in tokenizer_config.json, so it goes there as well.
    if not template:
        return
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config["chat_template"] = template
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmhost.models.convert", description="Convert a GGUF to an HF safetensors folder."
    )
    parser.add_argument("gguf", type=Path, help="the .gguf file")
    parser.add_argument("out_dir", type=Path, nargs="?", help="target folder (default: the cache folder)")
    parser.add_argument("--dtype", default=None, help="save weights as this torch dtype (float32, bfloat16…)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out_dir = args.out_dir or converted_dir(args.gguf)
    try:
        convert(args.gguf, out_dir, dtype=args.dtype)
    except ConversionError as exc:
        log.error("%s", exc)
        return 1
    log.info("%s", out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
