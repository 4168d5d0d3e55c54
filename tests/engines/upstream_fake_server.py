"""A stand-in engine server for the supervisor tests: a real process and a real HTTP /health, with the
start-up failures vLLM prints. Not a model: the real-model tests use llama_cpp.server.

    upstream_fake_server.py --port P [--max-model-len N] [--fits N] [--no-cache-memory] [--crash]
                            [--never-healthy] [--grandchild DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--max-model-len", type=int)
p.add_argument("--fits", type=int)
p.add_argument("--no-cache-memory", action="store_true")
p.add_argument("--crash", action="store_true")
p.add_argument("--never-healthy", action="store_true")
p.add_argument("--grandchild")
args = p.parse_args()

if args.crash:
    print("FileNotFoundError: the weights are missing", flush=True)
    sys.exit(3)
if args.no_cache_memory:
    print(
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
        "when initializing the engine.",
        flush=True,
    )
    sys.exit(1)
if args.fits is not None and (args.max_model_len or 32768) > args.fits:
    print(
        f"ValueError: The model's max seq len ({args.max_model_len}) is larger than the maximum number of "
        f"tokens that can be stored in KV cache ({args.fits}). Try increasing `gpu_memory_utilization` or "
        "decreasing `max_model_len` when initializing the engine.",
        flush=True,
    )
    sys.exit(1)
if args.never_healthy:
    time.sleep(3600)
if args.grandchild:
    # A worker process in the same group, as vLLM's engine core: shutdown must take it down too.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    Path(args.grandchild, f"grandchild-{__import__('os').getpid()}").write_text(str(child.pid))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *a: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
