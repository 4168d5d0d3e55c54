"""Reading a `--config` file and saying what is wrong with settings, one line per problem.

`Settings.load` (llmhost/config.py) reads the file through here first, so a missing, unreadable or
malformed file is one clear line; the CLI turns a ValidationError into lines that name where each bad
value came from (the flag, the environment variable or the config file), with a "did you mean" for a
mistyped key, and without pydantic's own layout or links.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError


class ConfigFileError(ValueError):
    """A `--config` file that is not a YAML mapping of setting keys (the message is one line)."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The keys and values of a `--config` file; FileNotFoundError or ConfigFileError naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ConfigFileError(f"config file {path} is not valid YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"config file {path} must be a mapping of setting keys to values (e.g. `port: 8001`), "
            f"not a {type(data).__name__}"
        )
    return data


def describe_problems(
    error: ValidationError, *, flags: Mapping[str, Any], config_file: str | Path | None = None
) -> list[str]:
    """One line per problem of `Settings.load`, naming where the value came from (the flag, the
    environment variable or the config file), without pydantic's own layout or links."""
    config_keys = read_config_file(config_file) if config_file is not None else {}
    lines = []
    for err in error.errors(include_url=False):
        key = str(err["loc"][0]) if err["loc"] else None
        message = _plain_message(err["type"], err["msg"], key)
        if key is None:
            lines.append(f"invalid settings: {message}")
        elif err["type"] == "extra_forbidden":
            lines.append(_unknown_key(key, config_file))
        else:
            value = "" if err["type"] == "value_error" else f" {_short_repr(err['input'])}"
            source = _source_of(key, flags, config_file, config_keys)
            lines.append(f"invalid {key}{value} (from {source}): {message}")
    return lines


def _plain_message(kind: str, msg: str, key: str | None) -> str:
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and key is not None:
        return f"not an accepted value; `llmhost serve --help` describes --{key.replace('_', '-')}"
    return msg[:1].lower() + msg[1:]


def _unknown_key(key: str, config_file: str | Path | None) -> str:
    where = f" in {config_file}" if config_file is not None else ""
    from llmhost.config import Settings  # config.py reads files through this module

    close = difflib.get_close_matches(key.replace("-", "_"), Settings.model_fields, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key}{where}: did you mean {close[0]}?"
    return (
        f"unknown key {key}{where}: not a setting; `llmhost serve --help` lists them "
        "(a key is a flag name with _ for -)"
    )


def _source_of(key: str, flags: Mapping[str, Any], config_file: str | Path | None, config_keys: dict) -> str:
    if flags.get(key) is not None:
        return "--" + key.replace("_", "-")
    env = f"LLMHOST_{key.upper()}"
    if any(name.upper() == env for name in os.environ):  # pydantic-settings matches names in any case
        return env
    if key in config_keys:
        return str(config_file)
    return "the default"


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
