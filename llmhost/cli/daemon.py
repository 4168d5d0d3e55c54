"""`serve --detach`, `status` and `stop`: llmhost as a background service, tracked by a pidfile.

A pidfile records the pid *and* the process start time (from /proc), so a pid that was reused by
another program after llmhost died is recognised as stale instead of being signalled. Processes are
only ever stopped by that verified pid (and its process group), never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    path = Path(base) / "llmhost"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pidfile_path(port: int) -> Path:
    return state_dir() / f"{port}.pid"


def default_log_path(port: int) -> Path:
    return state_dir() / f"{port}.log"


def process_start_time(pid: int) -> int | None:
    """Clock ticks since boot when `pid` started (field 22 of /proc/PID/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class PidRecord:
    pid: int
    port: int
    host: str
    start_time: int
    started_at: float
    log_file: str

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def is_alive(self) -> bool:
        """True only if the pid still runs *and* is the same process we started."""
        return process_start_time(self.pid) == self.start_time

    def save(self) -> None:
        path = pidfile_path(self.port)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, port: int) -> PidRecord | None:
        try:
            return cls(**json.loads(pidfile_path(port).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def remove_pidfile(port: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        pidfile_path(port).unlink()


def tail(path: str, num_lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-num_lines:])
    except OSError:
        return "(no log)"


def start_detached(
    serve_args: list[str], *, host: str, port: int, log_file: str | None, timeout_s: float
) -> tuple[PidRecord | None, str]:
    """Start `llmhost serve ARGS` in its own session; wait until /ready. Returns (record, message)."""
    existing = PidRecord.load(port)
    if existing is not None:
        if existing.is_alive():
            return None, f"llmhost is already running on port {port} (pid {existing.pid})"
        remove_pidfile(port)
    log_path = log_file or str(default_log_path(port))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmhost", "serve", *serve_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    start_time = process_start_time(proc.pid) or 0
    record = PidRecord(proc.pid, port, host, start_time, time.time(), log_path)
    record.save()
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                remove_pidfile(port)
                return None, f"llmhost exited during startup (code {proc.returncode}):\n{tail(log_path)}"
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{record.url}/ready").status_code == 200:
                    return record, f"llmhost is serving on {record.url} (pid {proc.pid}, log {log_path})"
            time.sleep(0.25)
    stop(record, grace_s=10)
    return None, f"llmhost was not ready within {timeout_s:g}s; stopped it:\n{tail(log_path)}"


def stop(record: PidRecord, *, grace_s: float) -> str:
    """SIGTERM, wait for a graceful exit, SIGKILL the process group after the grace period."""
    if not record.is_alive():
        remove_pidfile(record.port)
        return f"stale pidfile for port {record.port} removed (pid {record.pid} is not llmhost any more)"
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not record.is_alive():
            remove_pidfile(record.port)
            return f"stopped llmhost on port {record.port} (pid {record.pid})"
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, signal.SIGKILL)  # its own session: the group is llmhost and its children
    remove_pidfile(record.port)
    return f"llmhost on port {record.port} (pid {record.pid}) did not exit within {grace_s:g}s; killed"


def describe(record: PidRecord, api_key: str | None) -> dict[str, object]:
    """What `llmhost status` shows: process facts plus what the server says about itself."""
    info: dict[str, object] = {
        "pid": record.pid,
        "url": record.url,
        "log_file": record.log_file,
        "uptime_s": round(time.time() - record.started_at, 1),
    }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=3, headers=headers) as http:
        try:
            health = http.get(f"{record.url}/health").json()
            info.update(
                model=health.get("model"),
                engine=health.get("engine"),
                device=health.get("device"),
                model_loaded=health.get("model_loaded"),
            )
            info["ready"] = http.get(f"{record.url}/ready").status_code == 200
            metrics = http.get(f"{record.url}/metrics")
            if metrics.status_code == 200:
                info["requests_running"] = _gauge(metrics.text, "vllm:num_requests_running")
                info["requests_waiting"] = _gauge(metrics.text, "vllm:num_requests_waiting")
        except httpx.HTTPError as exc:
            info["error"] = f"not answering: {exc}"
    return info


def _gauge(text: str, name: str) -> int | None:
    """A count gauge from /metrics (Prometheus writes every value as a float: 0.0 requests), summed over
    its series (one per replica under `serve --ray`)."""
    from prometheus_client.parser import text_string_to_metric_families

    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
    return round(sum(values)) if values else None
