"""CLI flags generated from the `Settings` fields, so a flag, its env var and its config key never drift."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
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
    func: Callable[..., Any] | None = None, *, extra: list[inspect.Parameter] | None = None
) -> Any:
    """Give `func(config, settings_overrides...)` one CLI option per Settings field (plus `extra`)."""
    if func is None:
        return lambda f: with_settings_options(f, extra=extra)
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--config", help="YAML file with settings keys."),
            annotation=str | None,
        ),
    ]
    params += list(extra or [])
    params += [_option(name, field) for name, field in Settings.model_fields.items()]
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return func
