"""GGUF → HF conversion: the cache logic (keys, reuse, failures) without torch.

The real conversion of the embedded model (in vLLM's venv) is tested in tests/vllm/test_vllm_cpu.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.errors import ModelLoadError
from llmhost.models import convert
from llmhost.models.source import ModelSource


def _gguf(tmp_path: Path, name: str = "m.gguf", data: bytes = b"GGUF") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_cache_key_follows_path_size_and_mtime(tmp_path: Path) -> None:
    a = _gguf(tmp_path)
    key = convert.cache_key(a)
    assert convert.cache_key(a) == key
    os.utime(a, ns=(1, 1))
    assert convert.cache_key(a) != key
    b = _gguf(tmp_path, "other.gguf")
    os.utime(b, ns=(1, 1))
    assert convert.cache_key(b) != convert.cache_key(a)


def test_default_cache_dir_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LLMHOST_CONVERTED_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert convert.default_cache_dir() == tmp_path / "xdg" / "llmhost" / "converted"
    monkeypatch.setenv("LLMHOST_CONVERTED_DIR", str(tmp_path / "mine"))
    assert convert.default_cache_dir() == tmp_path / "mine"
    gguf = _gguf(tmp_path)
    assert convert.converted_dir(gguf) == tmp_path / "mine" / convert.cache_key(gguf)


def test_a_finished_conversion_is_reused_without_running_anything(tmp_path: Path) -> None:
    gguf = _gguf(tmp_path)
    done = convert.converted_dir(gguf, tmp_path / "cache")
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    (done / convert.MARKER).write_text("{}")
    assert convert.ensure_converted(gguf, python="/nonexistent/python", cache_dir=tmp_path / "cache") == done


def test_a_half_written_folder_is_not_a_conversion(tmp_path: Path) -> None:
    gguf = _gguf(tmp_path)
    half = convert.converted_dir(gguf, tmp_path / "cache")
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # no marker: the converter died before finishing
    assert not convert.is_converted(half)
    with pytest.raises(convert.ConversionError, match="does not exist"):
        convert.ensure_converted(gguf, python="/nonexistent/python", cache_dir=tmp_path / "cache")


def test_failures_name_the_file_and_the_cause(tmp_path: Path) -> None:
    with pytest.raises(convert.ConversionError, match="not found"):
        convert.ensure_converted(tmp_path / "missing.gguf", cache_dir=tmp_path)
    # A Python without the libraries (or a broken file): the child's own message comes back.
    gguf = _gguf(tmp_path, "broken.gguf", b"not a gguf")
    with pytest.raises(convert.ConversionError, match=r"broken\.gguf") as err:
        convert.ensure_converted(gguf, python=sys.executable, cache_dir=tmp_path / "cache")
    assert "failed" in str(err.value)
    assert not list((tmp_path / "cache").glob("*/" + convert.MARKER))


def test_the_module_runs_with_the_standard_library_only() -> None:
    # What another venv's interpreter does: no llmhost dependency may be imported at module level.
    code = (
        "import sys, llmhost.models.convert\n"
        "print(sorted(m for m in ('pydantic', 'httpx', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_engine_model_path(tmp_path: Path) -> None:
    hf = ModelSource(tmp_path, "hf", "m")
    assert convert.engine_model_path(hf, ("hf",)) == tmp_path
    gguf = ModelSource(_gguf(tmp_path), "gguf", "m")
    assert convert.engine_model_path(gguf, ("hf", "gguf")) == gguf.path
    with pytest.raises(ModelLoadError, match="reads gguf"):
        convert.engine_model_path(hf, ("gguf",))
    with pytest.raises(ModelLoadError, match="does not exist"):
        convert.engine_model_path(gguf, ("hf",), python="/nonexistent/python")


def test_an_occupied_out_dir_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(convert.ConversionError, match="not a finished conversion"):
        convert.convert(_gguf(tmp_path), out)
    assert (out / "precious.txt").read_text() == "keep me"
