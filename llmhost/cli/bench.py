"""`llmhost bench`: how fast is a server (llmhost or any OpenAI-compatible one) under load.

Exit codes: 0 at least one request succeeded; 1 every request failed; 2 bad input (an option or the
dataset file); 130 interrupted (Ctrl-C), after writing the report of what finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # the CLI imports these inside the command, so `llmhost --help` stays fast
    from rich.console import Console

    from llmhost.benchmarking.runner import BenchConfig
    from llmhost.benchmarking.stats import RequestResult
    from llmhost.benchmarking.workload import Prompt


def bench_command(
    url: str = typer.Option(..., "--url", help="Base URL of the server, e.g. http://127.0.0.1:8000."),
    model: str | None = typer.Option(None, "--model", help="Model name (default: the first of /v1/models)."),
    concurrency: str = typer.Option(
        "1", "--concurrency", help="Requests in flight; a comma-separated list runs one level after another."
    ),
    num_prompts: int | None = typer.Option(
        None, "--num-prompts", min=1, help="Requests per level (default: 32, or every line of --dataset)."
    ),
    input_len: int = typer.Option(
        128, "--input-len", min=1, help="Tokens per random prompt (calibrated from the server's usage)."
    ),
    output_len: int = typer.Option(
        128, "--output-len", min=1, help="Tokens to generate per request (max_tokens, with ignore_eos)."
    ),
    dataset: str = typer.Option(
        "random",
        "--dataset",
        help='"random" (words, --input-len tokens) or a JSONL file of {"prompt"} or {"messages"} lines.',
    ),
    request_rate: float = typer.Option(
        float("inf"),
        "--request-rate",
        help="Requests per second, arriving as a Poisson process (default inf: all at once).",
    ),
    endpoint: str = typer.Option("chat", "--endpoint", help="chat (/v1/chat/completions) or completions."),
    ignore_eos: bool = typer.Option(
        True, "--ignore-eos/--no-ignore-eos", help="Ask the server to keep generating past end-of-sequence."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the random prompts and arrival times."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="LLMHOST_API_KEY", help="Bearer key."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for one request."),
    out: Path | None = typer.Option(
        None, "--out", help="Write the report (vllm bench serve's keys) as JSON."
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write throughput and latency vs concurrency as PNG."
    ),
) -> None:
    """Stream requests at each concurrency level; report TTFT, TPOT, ITL, latency and throughput."""
    import asyncio

    from rich.console import Console

    from llmhost.benchmarking import report as bench_report
    from llmhost.benchmarking.runner import BenchConfig, load_dataset_prompts, parse_concurrency
    from llmhost.benchmarking.workload import WorkloadError

    try:
        config = BenchConfig(
            url=url,
            model=model,
            endpoint=endpoint,
            concurrency=parse_concurrency(concurrency),
            num_prompts=num_prompts,
            input_len=input_len,
            output_len=output_len,
            dataset=dataset,
            request_rate=request_rate,
            api_key=api_key,
            ignore_eos=ignore_eos,
            seed=seed,
            timeout_s=timeout,
        )
        file_prompts = load_dataset_prompts(config)
        for path in (out, plot):
            # Found out now, not after an hour of measuring.
            if path is not None and not path.resolve().parent.is_dir():
                raise ValueError(f"cannot write {path}: {path.resolve().parent} is not a directory")
    except (ValueError, WorkloadError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc

    console = Console(highlight=False, stderr=True)
    report = asyncio.run(_run_with_progress(config, file_prompts, console))
    if out is not None:
        bench_report.write_json(report, out)
    if plot is not None:
        bench_report.write_plot(report, plot)
    bench_report.print_summary(report, Console(highlight=False))
    for path, what in ((out, "report"), (plot, "plot")):
        if path is not None:
            console.print(f"{what} written to {path}", markup=False)
    if report["interrupted"]:
        console.print("[yellow]interrupted:[/yellow] the last level holds only the requests that finished")
        raise typer.Exit(130)
    if report["completed"] == 0:
        console.print(f"[red]every request failed[/red] ({report['failed']})")
        raise typer.Exit(1)


async def _run_with_progress(
    config: BenchConfig, file_prompts: list[Prompt] | None, console: Console
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llmhost.benchmarking.runner import run_benchmark

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task_ids: list = []

    def on_level(concurrency: int, num_prompts: int) -> None:
        task_ids.append(progress.add_task(f"concurrency {concurrency}", total=num_prompts, failed=0))

    def on_result(result: RequestResult) -> None:
        task = progress.tasks[-1]
        progress.update(task_ids[-1], advance=1, failed=task.fields["failed"] + (not result.is_ok))

    with progress:
        return await run_benchmark(config, file_prompts=file_prompts, on_level=on_level, on_result=on_result)
