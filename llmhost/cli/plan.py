"""`llmhost plan`: will this model fit these GPUs, with what context, and what to do if not.

Exit codes: 0 fits as asked; 1 does not fit, or fits only with a shorter --max-model-len (vLLM would
refuse to start with the context as given, so scripts must not treat it as success); 2 bad input.
"""

from __future__ import annotations

import re

import typer

_GPUS = re.compile(r"^\s*(?:(\d+)\s*[xX×*]\s*)?(\d+(?:\.\d+)?)\s*(GiB|GB|MiB|MB|TiB|TB)\s*$", re.IGNORECASE)
_UNITS = {"gib": 1024**3, "gb": 10**9, "mib": 1024**2, "mb": 10**6, "tib": 1024**4, "tb": 10**12}


def parse_gpus(value: str) -> tuple[int, int]:
    """'2x24GiB' → (2, 24 GiB in bytes); '80GB' → (1, 80e9)."""
    match = _GPUS.match(value)
    if not match or (match.group(1) is not None and int(match.group(1)) < 1):
        raise typer.BadParameter(
            f"{value!r} is not COUNTxSIZE with a unit, e.g. 2x24GiB, 1x80GB or 24GiB "
            "(units: GiB GB MiB MB TiB TB)"
        )
    count = int(match.group(1) or 1)
    size = int(float(match.group(2)) * _UNITS[match.group(3).lower()])
    if size <= 0:
        raise typer.BadParameter(f"{value!r}: GPU memory must be positive")
    return count, size


def plan(
    model: str = typer.Argument(
        ...,
        metavar="MODEL",
        help="A model folder, a config.json, or a catalogue name (Qwen2.5-32B-Instruct-AWQ).",
    ),
    gpus: str = typer.Option(..., "--gpus", help="GPUs as COUNTxSIZE, e.g. 2x24GiB."),
    tensor_parallel_size: int | None = typer.Option(
        None, "--tensor-parallel-size", help="Default: the most GPUs that divide the heads."
    ),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", help="Default: the model's max context."
    ),
    gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization", help="vLLM's fraction."),
    quantization: str | None = typer.Option(
        None,
        "--quantization",
        "-q",
        help="fp16|bf16|fp8|int8|awq|gptq-int4|gptq-int8|gguf-q4_k_m|gguf-q8_0|…",
    ),
    kv_cache_dtype: str = typer.Option("auto", "--kv-cache-dtype", help="auto (16-bit) or fp8."),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", help="vLLM's default is 256."),
    max_num_batched_tokens: int = typer.Option(
        8192, "--max-num-batched-tokens", help="Tokens in vLLM's profiling run; activations scale with it."
    ),
    overhead_gib: float | None = typer.Option(
        None, "--overhead-gib", help="Runtime overhead per GPU instead of the built-in estimate."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Will MODEL fit on these GPUs? Weights, KV cache per token, the longest context and a verdict."""
    import dataclasses
    import json

    from llmhost.models import catalogue
    from llmhost.models.inspect import ModelInspectError, inspect_model
    from llmhost.models.planner import PlanError, PlanRequest, plan_with_alternatives

    num_gpus, gpu_bytes = parse_gpus(gpus)
    try:
        arch = _resolve(model, catalogue, inspect_model)
        request = PlanRequest(
            num_gpus=num_gpus,
            gpu_memory_bytes=gpu_bytes,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            quantization=quantization.lower() if quantization else None,
            kv_cache_dtype=kv_cache_dtype.lower(),
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            overhead_gib=overhead_gib,
        )
        result = plan_with_alternatives(arch, request, catalogue.smaller_in_family(arch))
    except (PlanError, ModelInspectError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    if as_json:
        typer.echo(json.dumps({**dataclasses.asdict(result), "fits": result.fits}, indent=2))
    else:
        _print_table(result)
    raise typer.Exit(0 if result.fits else 1)


def _resolve(model: str, catalogue, inspect_model):  # noqa: ANN001, ANN202
    from pathlib import Path

    if Path(model).exists():
        return inspect_model(model)
    arch = catalogue.lookup(model)
    if arch is None:
        from llmhost.models.planner import PlanError

        hint = catalogue.close_names(model)
        raise PlanError(
            f"{model!r} is neither a model folder, a config.json, nor a catalogue name"
            + (f"; did you mean {', '.join(hint)}?" if hint else "")
        )
    return arch


def _print_table(p) -> None:  # noqa: ANN001
    from rich.console import Console
    from rich.table import Table

    from llmhost.models.planner import FITS, FITS_SHORTER, GIB

    def gib(n: int) -> str:
        return f"{n / GIB:.2f} GiB"

    table = Table(
        title=f"{p.model} ({p.quantization}) on {p.num_gpus} × {gib(p.gpu_memory_bytes)}, "
        f"TP={p.tensor_parallel_size}"
    )
    table.add_column("per GPU", style="bold")
    table.add_column("value", justify="right")
    table.add_column("how", style="dim")
    table.add_row("budget", gib(p.budget_bytes), f"GPU memory × {p.gpu_memory_utilization:g}")
    source = "from the files" if p.weights_measured else f"params × {p.quantization} bytes"
    table.add_row("weights", gib(p.weight_bytes), f"{source}, ÷ TP {p.tensor_parallel_size}")
    table.add_row("runtime overhead", gib(p.overhead_bytes), p.overhead_basis)
    table.add_row("KV cache", gib(max(0, p.kv_cache_bytes)), "budget − weights − overhead")
    table.add_row(
        "KV bytes per token",
        f"{p.kv_bytes_per_token:,} B",
        f"2 × layers × kv_heads × head_dim × {p.kv_dtype} bytes ÷ TP",
    )
    table.add_row("KV tokens", f"{p.kv_tokens:,}", "in 16-token blocks")
    table.add_row(
        "longest max-model-len", f"{p.max_fitting_len:,}", "one sequence, capped at the model's context"
    )
    table.add_row(f"sequences of {p.max_model_len:,}", f"{p.num_full_sequences}", "full-length, at once")
    console = Console()
    console.print(table)
    style = {FITS: "green", FITS_SHORTER: "yellow"}.get(p.verdict, "red")
    console.print(f"verdict: [{style}]{p.verdict}[/{style}]")
    if p.suggestion:
        console.print(p.suggestion, highlight=False)
    for alternative in p.alternatives:
        console.print(f"  try {alternative}", highlight=False)
