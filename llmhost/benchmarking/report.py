"""What a finished benchmark shows: a rich summary table, the JSON file, and a PNG plot.

The plot has two panels over the concurrency levels: throughput (output tokens/s, and requests/s on a
second axis) and latency (median and p99 TTFT, median TPOT and ITL, in ms). matplotlib is imported
inside `write_plot` with the Agg backend, so the CLI starts fast and no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# (title, key, format) rows of the summary table, in vLLM's order.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("completed", "completed", "{:d}"),
    ("failed", "failed", "{:d}"),
    ("duration (s)", "duration", "{:.2f}"),
    ("input tokens", "total_input_tokens", "{:d}"),
    ("output tokens", "total_output_tokens", "{:d}"),
    ("requests/s", "request_throughput", "{:.2f}"),
    ("output tokens/s", "output_throughput", "{:.1f}"),
    ("total tokens/s", "total_token_throughput", "{:.1f}"),
    ("mean TTFT (ms)", "mean_ttft_ms", "{:.1f}"),
    ("median TTFT (ms)", "median_ttft_ms", "{:.1f}"),
    ("p99 TTFT (ms)", "p99_ttft_ms", "{:.1f}"),
    ("mean TPOT (ms)", "mean_tpot_ms", "{:.2f}"),
    ("median TPOT (ms)", "median_tpot_ms", "{:.2f}"),
    ("p99 TPOT (ms)", "p99_tpot_ms", "{:.2f}"),
    ("mean ITL (ms)", "mean_itl_ms", "{:.2f}"),
    ("median ITL (ms)", "median_itl_ms", "{:.2f}"),
    ("p99 ITL (ms)", "p99_itl_ms", "{:.2f}"),
    ("mean E2EL (ms)", "mean_e2el_ms", "{:.1f}"),
    ("median E2EL (ms)", "median_e2el_ms", "{:.1f}"),
    ("p99 E2EL (ms)", "p99_e2el_ms", "{:.1f}"),
)
MAX_REASONS_SHOWN = 3


def heading(report: dict[str, Any]) -> str:
    """What was measured, in one line (the table's title would wrap in a narrow terminal)."""
    source = f"{report['num_prompts']} prompts per level"
    if report["input_len"] is not None:
        source += f" of ~{report['input_len']} tokens"
    return (
        f"{report.get('model_id') or '?'} at {report['url']}{report['endpoint']}: {source} "
        f"({report['dataset']}), output {report['output_len']} tokens, request rate {report['request_rate']}"
    )


def summary_table(report: dict[str, Any]) -> Table:
    """One column per concurrency level, one row per metric."""
    table = Table()
    table.add_column("concurrency", no_wrap=True)
    for run in report["runs"]:
        table.add_column(str(run["max_concurrency"]), justify="right", no_wrap=True)
    for title, key, fmt in ROWS:
        cells = [fmt.format(run[key]) for run in report["runs"]]
        if key == "failed":
            cells = [
                f"[red]{c}[/red]" if run["failed"] else c
                for c, run in zip(cells, report["runs"], strict=True)
            ]
        table.add_row(title, *cells)
    return table


def print_summary(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    console.print(heading(report), markup=False)
    console.print(summary_table(report))
    for run in report["runs"]:
        if run["num_input_estimated"] or run["num_input_unknown"]:
            console.print(
                f"[yellow]concurrency {run['max_concurrency']}:[/yellow] the server reported no prompt "
                f"tokens for {run['num_input_estimated'] + run['num_input_unknown']} requests: "
                f"{run['num_input_estimated']} estimated from the calibration, "
                f"{run['num_input_unknown']} counted as 0"
            )
        for error in run["errors"][:MAX_REASONS_SHOWN]:
            console.print(
                f"[yellow]concurrency {run['max_concurrency']}: {error['count']} failed:[/yellow] "
                f"{escape(error['reason'])}"
            )
        if len(run["errors"]) > MAX_REASONS_SHOWN:
            console.print(f"  … {len(run['errors']) - MAX_REASONS_SHOWN} more reasons in the JSON report")


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_plot(report: dict[str, Any], path: str | Path) -> None:
    """Throughput and latency vs concurrency, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    runs = report["runs"]
    levels = [run["max_concurrency"] for run in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    try:
        left.plot(
            levels, [r["output_throughput"] for r in runs], "o-", color="tab:blue", label="output tokens/s"
        )
        left.set_xlabel("concurrency")
        left.set_ylabel("output tokens/s", color="tab:blue")
        left.set_title("throughput")
        requests = left.twinx()
        requests.plot(levels, [r["request_throughput"] for r in runs], "s--", color="tab:orange")
        requests.set_ylabel("requests/s", color="tab:orange")
        for axis in (left, requests):
            axis.set_ylim(bottom=0)  # a zero base: a small change must not look like a collapse

        for key, label in (
            ("median_ttft_ms", "median TTFT"),
            ("p99_ttft_ms", "p99 TTFT"),
            ("median_tpot_ms", "median TPOT"),
            ("median_itl_ms", "median ITL"),
            ("median_e2el_ms", "median E2EL"),
        ):
            right.plot(levels, [r[key] for r in runs], "o-", label=label)
        right.set_xlabel("concurrency")
        right.set_ylabel("ms")
        if all(r[key] > 0 for r in runs for key in ("median_ttft_ms", "median_itl_ms")):
            right.set_yscale("log")  # TTFT and E2EL are orders of magnitude above ITL on a GPU
        right.set_title("latency")
        right.legend(fontsize="small")
        for axis in (left, right):
            axis.set_xticks(levels)
            axis.grid(alpha=0.3)
        fig.suptitle(f"{report.get('model_id') or '?'} · {report['url']}", fontsize="medium")
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
