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
    default = _shown_default(field)
    help_text = f"{field.description or ''} [{f'default: {default}; ' if default else ''}env: {env}]"
    if cli_type is bool:
        decls = [f"{_flag(name)}/--no-{name.replace('_', '-')}"]
    else:
        decls = [_flag(name)]
    # The option's own default stays None ("not given"), so the environment and the config file can
    # still set it; the help text shows the Settings default instead.
    option = typer.Option(None, *decls, help=help_text, show_default=False, metavar=_metavar(field, cli_type))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=cli_type | None)


def _shown_default(field: FieldInfo) -> str | None:
    value = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return None  # the description says what happens then
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _metavar(field: FieldInfo, cli_type: Any) -> str | None:
    """The choices of a Literal field ([qwen3|deepseek_r1]), else the kind of value; none for a bool."""
    for annotation in (field.annotation, *typing.get_args(field.annotation)):
        if typing.get_origin(annotation) is typing.Literal:
            return "[" + "|".join(typing.get_args(annotation)) + "]"
    if cli_type is bool:
        return None
    item = typing.get_args(cli_type)[0] if typing.get_origin(cli_type) is list else cli_type
    return {int: "INTEGER", float: "NUMBER"}.get(item, "TEXT")


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
            default=typer.Option(
                None,
                "--config",
                metavar="FILE",
                help="YAML file of settings: each key is a flag name with _ for -.",
            ),
            annotation=str | None,
        ),
    ]
    params += list(extra or [])
    names = list(fields) if fields is not None else list(Settings.model_fields)
    params += [_option(name, Settings.model_fields[name]) for name in names]
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return func


def load_settings(options: dict[str, Any]) -> Settings:
    """Settings from a server command's options (`config` plus overrides). Bad values are a start-up
    failure: exit 1, one line per problem naming its flag, environment variable or config key (a flag
    click itself cannot parse, e.g. `--port abc`, stays click's usage error, exit 2)."""
    from pydantic import ValidationError

    from llmhost.config_file import ConfigFileError, describe_problems

    config = options.pop("config", None)
    try:
        return Settings.load(config, **options)
    except (FileNotFoundError, ConfigFileError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ValidationError as exc:
        for line in describe_problems(exc, flags=options, config_file=config):
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1) from exc


def configure_logging(level: str, log_file: str | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file and not _is_stderr(log_file):  # --detach already sends stderr to that file
        try:
            handlers.append(logging.FileHandler(log_file))
        except OSError as exc:
            typer.echo(f"error: cannot write --log-file {log_file}: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers
    )


def _is_stderr(path: str) -> bool:
    try:
        a, b = os.fstat(sys.stderr.fileno()), os.stat(path)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
