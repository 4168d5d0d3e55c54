"""Stress tier: schemathesis against the served OpenAPI schema. No input may make the server answer 5xx.

Schemathesis reads `/openapi.json` from a real server and, for every operation, generates a bounded
number of requests that fit the schema (positive) and of requests that break it (negative: wrong types,
missing fields, out-of-range values), sends each, and applies only its `not_a_server_error` check: a 4xx
is a fine answer to a bad request, a 5xx never is. Every failure is collected (with a curl command that
repeats it) and the test fails at the end listing them all.

It uses schemathesis' Python API (`operation.as_strategy()` under Hypothesis' `@given`), not its pytest
plugin (`schemathesis.pytest.from_fixture(...).parametrize()`): with pytest 9.2 that plugin fails
before sending anything (`'Function' object has no attribute '_nodeid'`, schemathesis 4.32.5).

What is left out, or bounded, and why:
  - POST /api/v1/model/unload and /api/v1/model/load change the server's state: after an unload every
    generation answers 503 on purpose, which would then fail every later case for nothing.
  - Generation is bounded so that the run takes about a minute on 2 cores: a generated request that
    would decode many tokens (`max_tokens` absent means "until the model stops", up to the 512-token
    context) gets at most MAX_TOKENS, `n` at most 2, a list of prompts at most 3 prompts. Values that
    the server refuses before generating anything are left as generated (wrong types, 0, negatives,
    and on the OpenAI routes counts above the context, which are a 400 `context_length_exceeded`).
    `stream: true` stays in: with few tokens a stream is short, and its status line is what this
    checks (the body is read to its end).
  - Generation is deterministic (a run repeats) and nothing is stored in Hypothesis' example database;
    shrinking is off: a failure is reported as generated, fast.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402

from tests.conftest import start_server, stop_server  # noqa: E402

pytestmark = pytest.mark.stress

MAX_MODEL_LEN = 512
MAX_TOKENS = 8
MAX_N = 2
MAX_PROMPTS = 3
MAX_EXAMPLES = 30  # generated cases per operation, valid and invalid ones mixed
EXCLUDED = r"^/api/v1/model/(load|unload)$"
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_new_tokens")
# Bodies sent as `application/json` that are not JSON text. Generation finds such bodies only now and
# then (the first one is what it found on /api/v1/chat); these make every run try them on every route.
UNPARSEABLE = [b"\xff\xfe`-/k_\xe9s", b'{"message": "\xff"}', b"{", b"", b"null", b"[]"]

SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # --threads 1: llama.cpp's threads spin at barriers; on a shared 2-core box one thread stays fast.
    srv = start_server(
        tmp_path_factory.mktemp("schemathesis"),
        *("--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", "4", "--threads", "1"),
    )
    yield srv
    stop_server(srv)


def bound_generation(case: Any) -> None:
    """Cap what a generated JSON body may make the engine decode (see the module docstring)."""
    body = case.body
    if not isinstance(body, dict):
        return
    is_openai = case.operation.path.startswith("/v1/")
    for name in TOKEN_FIELDS:
        value = body.get(name)
        if type(value) is int and value > MAX_TOKENS and not (is_openai and value > MAX_MODEL_LEN):
            body[name] = MAX_TOKENS
    if not any(name in body for name in TOKEN_FIELDS):
        body["max_tokens" if is_openai else "max_new_tokens"] = MAX_TOKENS
    if type(body.get("n")) is int and body["n"] > MAX_N:
        body["n"] = MAX_N
    if isinstance(body.get("prompt"), list):
        body["prompt"] = body["prompt"][:MAX_PROMPTS]


def test_no_server_errors(server: Any) -> None:
    config = schemathesis.Config.from_dict({})  # defaults; no schemathesis.toml from the work tree
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    schema = schema.exclude(path_regex=EXCLUDED)
    sent: Counter[str] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [schemathesis.GenerationMode.POSITIVE]
        if operation.body or operation.query:  # something to break
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))

        @SETTINGS
        @given(case=strategy)
        def check(case: Any) -> None:
            bound_generation(case)
            response = case.call(timeout=120)
            sent[f"{case.operation.label} -> {response.status_code}"] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except FailureGroup:  # the check failed: collect it, go on
                failures.append(
                    f"{case.operation.label} -> {response.status_code}: {response.text[:300]}\n"
                    f"  {case.as_curl_command()}"
                )

        check()
    print("\n".join(f"{n:4d}  {what}" for what, n in sorted(sent.items())))
    assert sent, "no operation was tested"
    assert not failures, f"{len(failures)} server error(s):\n" + "\n".join(failures[:20])


def test_unparseable_bodies_are_client_errors(server: Any) -> None:
    paths = [
        path
        for path, methods in httpx.get(f"{server.url}/openapi.json").json()["paths"].items()
        if "post" in methods and "requestBody" in methods["post"] and not re.match(EXCLUDED, path)
    ]
    assert paths
    answers = []
    for path in paths:
        for raw in UNPARSEABLE:
            r = httpx.post(
                f"{server.url}{path}", content=raw, headers={"Content-Type": "application/json"}, timeout=60
            )
            answers.append((r.status_code, f"POST {path} {raw!r} -> {r.status_code} {r.text[:200]}"))
    print("\n".join(line for _, line in answers))
    errors = [line for status, line in answers if status >= 500]
    assert not errors, "\n".join(errors)
