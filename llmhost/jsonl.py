"""Reading JSONL input files (bench workloads, eval datasets) with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path, error: type[Exception]) -> Iterator[tuple[int, str, Any]]:
    """`(line number, "path:line", value)` for each non-blank line; an unreadable file or a line that is
    not JSON raises `error` naming where."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield number, where, json.loads(line)
        except ValueError as exc:
            raise error(f"{where}: not valid JSON ({exc})") from exc
