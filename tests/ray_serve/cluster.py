"""A two-node Ray cluster on loopback for tests: head and worker are separate `ray start --block`
processes on 127.0.0.2 and 127.0.0.3 (Ray replaces 127.0.0.1 with the machine's own address), each in
its own session with its own temp dir under the test's tmp dir, stopped by process group at teardown.

Facts this relies on (measured on the 2-core box, ../shared/notes/ray_vllmcpu.md): both nodes and every
driver must agree on `RAY_AUTH_MODE` (token here, with the token in the environment, so nothing is read
from or written to ~/.ray); each node claims a capped object store; `ray stop` is never run (it stops
every Ray process on the machine, other people's too).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import RunningServer, _die_with_parent, free_port

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
OBJECT_STORE_BYTES = 100 * 10**6  # Ray's minimum is 75 MB; the default would be 30% of the memory
STOP_WAIT_S = 20.0


@dataclass
class Node(RunningServer):
    """One `ray start --block` (`url`: its node address; `log()`: its output)."""

    name: str = ""

    def descendants(self) -> list[int]:
        """Every process started under this node's `ray start` (raylet, agents, workers)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                found.append(child)
                todo.append(child)
        return found

    def processes_titled(self, prefix: str) -> list[int]:
        """This node's processes whose command line (a Ray worker's process title) starts with `prefix`."""
        pids = []
        for pid in self.descendants():
            try:
                title = (
                    Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
            if title.startswith(prefix):
                pids.append(pid)
        return pids


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)

    def stop(self) -> None:
        """Worker first (it talks to the head while it stops), each by SIGTERM to its process group (what
        Ctrl-C on `ray start --block` does), then SIGKILL to whatever is left of it, found by pid."""
        leftovers = {pid for node in self.nodes for pid in node.descendants()}
        for node in reversed(self.nodes):
            _signal_group(node.process.pid, signal.SIGTERM)
            try:
                node.process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                _signal_group(node.process.pid, signal.SIGKILL)
                node.process.wait()
        for pid in leftovers:  # a worker that left the group (none expected) must not outlive the test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_cluster(tmp_dir: Path, *, num_cpus_per_node: int = 1) -> Cluster:
    """Head then worker; returns once the head's GCS port answers (the worker joins in the background:
    what runs on it waits for it)."""
    port = free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        # A node that gets SIGTERM drains for 30 s by default (for KubeRay upgrades); a test stops at once.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    cluster = Cluster(f"{HEAD_IP}:{port}", env)
    common = [
        "--block",
        f"--num-cpus={num_cpus_per_node}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--disable-usage-stats",
    ]
    try:
        head = ["--head", f"--port={port}", f"--node-ip-address={HEAD_IP}", "--include-dashboard=false"]
        cluster.nodes.append(_start_node("head", cluster.address, tmp_dir, [*head, *common], env))
        _wait_for_port(HEAD_IP, port, cluster.nodes[0])
        worker = [f"--address={cluster.address}", f"--node-ip-address={WORKER_IP}"]
        cluster.nodes.append(_start_node("worker", WORKER_IP, tmp_dir, [*worker, *common], env))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_node(name: str, address: str, tmp_dir: Path, args: list[str], env: dict[str, str]) -> Node:
    temp_dir = tmp_dir / name
    temp_dir.mkdir()
    log_path = tmp_dir / f"{name}.log"
    ray = str(Path(sys.executable).parent / "ray")
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [ray, "start", *args, f"--temp-dir={temp_dir}"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped as one at teardown
            preexec_fn=_die_with_parent,  # and stopped if the tests die
        )
    return Node(address, process, log_path, name)


def _wait_for_port(host: str, port: int, node: Node, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(f"ray {node.name} exited with {node.process.returncode}:\n{node.log()}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"ray {node.name} not listening on {host}:{port} within {timeout_s}s:\n{node.log()}")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
