"""CLI flags generated from the `Settings` fields, so a flag, its env var and its config key never drift;
and the loading and logging set-up every server command shares."""

from __future__ import annotations

import inspect
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import typer
from pydantic.fields import FieldInfo

from llmhost.config import Settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cli_type(annotation: Any) -> Any:
    """The Python type typer should parse, from a field annotation like `int | None` or `list[str]`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        annotation, origin = args[0], typing.get_origin(args[0])
    if origin is list:
        return list[typing.get_args(annotation)[0]]  # type: ignore[index]
    if origin is typing.Literal:
        return str
    return annotation


def _option(name: str, field: FieldInfo) -> inspect.Parameter:
    cli_type = _cli_type(field.annotation)
    env = f"LLMHOST_{name.upper()}"
    help_text = f"{field.description or ''} [env: {env}]"
    if cli_type is bool:
        decls = [f"{_flag(name)}/--no-{name.replace('_', '-')}"]
    else:
        decls = [_flag(name)]
    default = typer.Option(None, *decls, help=help_text, show_default=False)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=cli_type | None
    )


def with_settings_options(
    func: Callable[..., Any] | None = None,
    *,
    extra: list[inspect.Parameter] | None = None,
    fields: Iterable[str] | None = None,
) -> Any:
    """Give `func(config, settings_overrides...)` one CLI option per Settings field (or per name in
    `fields`), plus the `extra` parameters."""
    if func is None:
        return lambda f: with_settings_options(f, extra=extra, fields=fields)
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--config", help="YAML file with settings keys."),
            annotation=str | None,
        ),
    ]
    params += list(extra or [])
    names = list(fields) if fields is not None else list(Settings.model_fields)
    params += [_option(name, Settings.model_fields[name]) for name in names]
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return func


def load_settings(options: dict[str, Any]) -> Settings:
    """Settings from a command's options (`config` plus overrides); bad values exit 2 with the reason."""
    from pydantic import ValidationError

    config = options.pop("config", None)
    try:
        return Settings.load(config, **options)
    except (ValidationError, FileNotFoundError) as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


def configure_logging(level: str, log_file: str | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file and not _is_stderr(log_file):  # --detach already sends stderr to that file
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers
    )


def _is_stderr(path: str) -> bool:
    try:
        a, b = os.fstat(sys.stderr.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
