"""`--chat-template FILE`: the operator's template replaces the model's; a broken one stops start-up."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.conftest import start_server, stop_server

# A deliberately plain template: its rendered prompt is much shorter than the model's ChatML (which adds
# a default system prompt), so the prompt's token count tells which template ran.
TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}### ASSISTANT:{% endif %}"
)


def prompt_tokens(url: str) -> int:
    r = httpx.post(
        f"{url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()["usage"]["prompt_tokens"]


def test_the_operators_template_is_used(tmp_path, server):
    path = tmp_path / "template.jinja"
    path.write_text(TEMPLATE)
    srv = start_server(tmp_path, "--max-model-len", "512", "--chat-template", str(path))
    try:
        # "### USER: Hi\n### ASSISTANT:" is shorter than SmolLM2's ChatML with its default system prompt.
        assert prompt_tokens(srv.url) < prompt_tokens(server.url)
    finally:
        stop_server(srv)


def test_a_broken_template_stops_start_up_naming_the_file(tmp_path):
    path = tmp_path / "broken.jinja"
    path.write_text("{% for m in messages %}{{ m.content }")
    done = subprocess.run(
        [sys.executable, "-m", "llmhost", "serve", "--chat-template", str(path), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "broken.jinja" in done.stdout + done.stderr
