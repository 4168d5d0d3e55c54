"""`llmhost eval`: how good are a server's answers to a QA set, and how fast did they come.

Exit codes: 0 the mean score reaches the threshold; 1 it does not (or no request succeeded);
2 bad input (the dataset, an option, or a metric whose package is missing).
"""

from __future__ import annotations

from pathlib import Path

import typer

WORST_SHOWN = 5


def eval_command(
    url: str = typer.Option(..., "--url", help="Base URL of the server, e.g. http://127.0.0.1:8000."),
    data: Path = typer.Option(
        ..., "--data", help='JSONL: {"question"|"prompt": …, "answer"|"reference": …} per line.'
    ),
    api: str = typer.Option(
        "predict-batch",
        "--api",
        help="predict (one request per question), predict-batch (all in one /predict request, "
        "as the seed-003 harness does) or chat (/v1/chat/completions).",
    ),
    metric: str = typer.Option(
        "rougeL-jieba", "--metric", help="rougeL-jieba | rougeL-harness | exact | contains."
    ),
    threshold: float = typer.Option(0.35, "--threshold", help="Pass when the mean score reaches this."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Requests in flight (predict, chat)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="LLMHOST_API_KEY", help="Bearer key."),
    model: str | None = typer.Option(None, "--model", help="Model name for --api chat (default: the first)."),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", min=1, help="Cap on new tokens per answer (default: the server's)."
    ),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for one request."),
    out: Path | None = typer.Option(None, "--out", help="Write the report with per-item results as JSON."),
) -> None:
    """Score a server's answers to a QA set (RougeL over jieba words by default) and measure chars/s."""
    import asyncio
    import json

    from llmhost.evaluation import metrics, runner

    if api not in runner.APIS:
        typer.echo(f"unknown --api {api!r}; choose one of {', '.join(runner.APIS)}", err=True)
        raise typer.Exit(2)
    try:
        metrics.get_metric(metric)
        items = runner.load_dataset(data)
    except (ValueError, metrics.MetricUnavailable) as exc:  # DatasetError is a ValueError
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc

    answers, wall_time_s = asyncio.run(
        runner.collect_answers(
            url,
            items,
            api=api,
            concurrency=concurrency,
            api_key=api_key,
            model=model,
            max_tokens=max_tokens,
            timeout_s=timeout,
        )
    )
    report = runner.build_report(
        url, items, answers, wall_time_s, api=api, metric=metric, threshold=threshold
    )
    if out is not None:
        out.write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
    _print_report(report, out)
    raise typer.Exit(0 if report.passed else 1)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print_report(report, out: Path | None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    worst = sorted(report.items, key=lambda r: (r.error is None, r.score))[:WORST_SHOWN]
    table = Table(title=f"worst {len(worst)} of {report.num_items}", title_justify="left")
    table.add_column("line", justify="right", no_wrap=True, min_width=4)
    table.add_column("score", justify="right", no_wrap=True, min_width=5)
    # Widths that fit an 80-column terminal (and a pipe); the full texts are in --out.
    table.add_column("question", overflow="ellipsis", max_width=16, no_wrap=True)
    table.add_column("reference", overflow="ellipsis", max_width=16, no_wrap=True)
    table.add_column("answer", overflow="ellipsis", max_width=22, no_wrap=True)
    for r in worst:
        answer = f"[red]error: {escape(_one_line(r.error))}[/red]" if r.error else escape(_one_line(r.answer))
        table.add_row(
            str(r.line),
            f"{r.score:.3f}",
            escape(_one_line(r.question)),
            escape(_one_line(r.reference)),
            answer,
        )
    console.print(table, markup=True)

    verdict = "[green]PASS[/green]" if report.passed else "[red]FAIL[/red]"
    console.print(
        f"{report.metric} mean {report.mean_score:.4f} (threshold {report.threshold:g}): {verdict}"
        f"  ·  {report.num_items} items, {report.num_errors} errors via {report.api}"
    )
    for name, value in report.other_means.items():
        console.print(f"{name} mean {value:.4f} (for comparison)")
    tokens = f"{report.tokens_per_s:.1f} tokens/s" if report.tokens_per_s is not None else "tokens/s n/a"
    console.print(
        f"{report.output_chars} chars in {report.wall_time_s:.2f} s: "
        f"{report.chars_per_s:.1f} chars/s, {tokens}"
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if out is not None:
        console.print(f"report written to {escape(str(out))}")
