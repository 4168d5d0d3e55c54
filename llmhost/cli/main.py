"""`llmhost` command line. Heavy imports happen inside commands so `llmhost --help` stays instant."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import typer

from llmhost.cli.bench import bench_command
from llmhost.cli.chat import chat as chat_command
from llmhost.cli.eval import eval_command
from llmhost.cli.options import configure_logging, load_settings, with_settings_options
from llmhost.cli.plan import plan as plan_command
from llmhost.cli.tool_server import tool_server as tool_server_command

app = typer.Typer(
    name="llmhost",
    help="Load a model once, with the fastest engine that works, and serve every LLM contract.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help, as click writes it: rich's option table cuts long flag names at 80 columns.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from llmhost import __version__

        typer.echo(f"llmhost {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """llmhost: one server for the OpenAI API and the contracts your team's clients expect."""


_DETACH = inspect.Parameter(
    "detach",
    inspect.Parameter.KEYWORD_ONLY,
    annotation=bool,
    default=typer.Option(
        False,
        "--detach",
        "-d",
        help="Run in the background: write a pidfile and a log "
        "file, wait until ready, print the URL and return.",
    ),
)
_DETACH_TIMEOUT = inspect.Parameter(
    "ready_timeout",
    inspect.Parameter.KEYWORD_ONLY,
    annotation=float,
    default=typer.Option(
        600.0, "--ready-timeout", metavar="SECONDS", help="With --detach: seconds to wait for readiness."
    ),
)


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
@with_settings_options(extra=[_DETACH, _DETACH_TIMEOUT])
def serve(**options: Any) -> None:
    """Serve a model (default: the embedded SmolLM2-135M-Instruct) over every API face."""
    detach, ready_timeout = options.pop("detach"), options.pop("ready_timeout")
    settings = load_settings(options)
    if detach:
        _serve_detached(settings, ready_timeout)
        return
    configure_logging(settings.log_level, settings.log_file)
    if settings.ray:  # the same app as a Ray Serve deployment (llmhost/ray_serve/, docs/ray.md)
        from llmhost.ray_serve.launch import run_on_ray

        sys.exit(run_on_ray(settings))
    from llmhost.cli.startup import run_server

    sys.exit(run_server(settings))


def _serve_detached(settings: Any, ready_timeout: float) -> None:
    from llmhost.cli import daemon
    from llmhost.cli.startup import StartupError, check_model, check_port

    try:  # the same checks the child makes, answered here at once
        check_model(settings)
        check_port(settings.host, settings.port)
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None

    # The child gets the same command line minus --detach; env and --config carry over unchanged.
    args = [a for a in sys.argv[2:] if a not in ("--detach", "-d")]
    record, message = daemon.start_detached(
        args, host=settings.host, port=settings.port, log_file=settings.log_file, timeout_s=ready_timeout
    )
    typer.echo(message, err=record is None)
    if record is None:
        raise typer.Exit(1)


@app.command()
def status(
    port: int = typer.Option(8000, "--port", "-p", help="Port of the background server."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="LLMHOST_API_KEY", help="Key for /metrics when the server requires one."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a background server: pid, uptime, model, engine, readiness, requests in flight."""
    import json

    from llmhost.cli import daemon

    record = daemon.PidRecord.load(port)
    if record is None:
        typer.echo(f"no llmhost server recorded on port {port}", err=True)
        raise typer.Exit(1)
    if not record.is_alive():
        daemon.remove_pidfile(port)
        typer.echo(f"stale pidfile removed: pid {record.pid} is no longer llmhost", err=True)
        raise typer.Exit(1)
    info = daemon.describe(record, api_key.split(",")[0] if api_key else None)
    if as_json:
        typer.echo(json.dumps(info))
    else:
        for key, value in info.items():
            typer.echo(f"{key:>17}: {value}")


@app.command()
def stop(
    port: int = typer.Option(8000, "--port", "-p", help="Port of the background server."),
    grace: float = typer.Option(30.0, "--grace", help="Seconds to wait after SIGTERM before SIGKILL."),
) -> None:
    """Stop a background server (SIGTERM to its recorded pid, SIGKILL after the grace period)."""
    from llmhost.cli import daemon

    record = daemon.PidRecord.load(port)
    if record is None:
        typer.echo(f"no llmhost server recorded on port {port}", err=True)
        raise typer.Exit(1)
    typer.echo(daemon.stop(record, grace_s=grace))


app.command("chat")(chat_command)  # talk to a running server (llmhost/cli/chat.py)
app.command("plan")(plan_command)  # will a model fit these GPUs (llmhost/cli/plan.py)
app.command("tool-server")(tool_server_command)  # /get_observation alone (llmhost/cli/tool_server.py)
app.command("eval")(eval_command)  # how good are a server's answers to a QA set (llmhost/cli/eval.py)
app.command("bench")(bench_command)  # how fast is a server under load (llmhost/cli/bench.py)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
