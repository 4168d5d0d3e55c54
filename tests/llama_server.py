"""A real `python -m llama_cpp.server` (llama-cpp-python's OpenAI server) on the embedded model, for the
upstream-engine tests: llmhost attaches to it, and its own greedy answers are the reference."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from tests.conftest import RunningServer, free_port, start_process

N_CTX = 1024  # small, and one thread: two cores are shared by every test


def start_llama_server(tmp_dir: Path, model_path: Path, timeout_s: float = 120.0) -> RunningServer:
    port = free_port()
    log_path = tmp_dir / f"llama-server-{port}.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", str(N_CTX), "--n_threads", "1", "--n_threads_batch", "1"]
    cmd += ["--interrupt_requests", "false"]  # queue concurrent requests instead of cutting the running one
    return start_process(cmd, port, log_path, ready_path="/v1/models", timeout_s=timeout_s)


def greedy_reference(url: str, prompt_text: str, max_tokens: int) -> dict:
    """llama_cpp.server's own greedy completion of a rendered prompt (no penalties: pure argmax)."""
    body = {
        "prompt": prompt_text,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "top_k": 0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
    }
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    r.raise_for_status()
    return r.json()


def render_chat(model_path: Path, messages: list[dict]) -> str:
    """The prompt llmhost renders for `messages`: the GGUF's own chat template."""
    from llmhost.conversation.template import ChatTemplate
    from llmhost.engines.upstream.tokenizer import GgufTokenizer

    tok = GgufTokenizer(model_path)
    try:
        info = tok.info
        template = ChatTemplate.for_engine(
            info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token
        )
        return template.render(messages, add_generation_prompt=True)
    finally:
        tok.close()
