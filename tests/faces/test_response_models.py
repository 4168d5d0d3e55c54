"""Response models of every face: `/openapi.json` documents what each route returns, and the bytes on
the wire are what the faces sent before they had models.

EXPECTED was recorded from the faces as they were when they still built their answers as dicts (ids,
clocks and run times normalised, see `normalise`). A difference here is a change clients can see (key
order, a null that became an omitted key, `1e-07` written as `1e-7`…): fix the model, not the literal,
unless the wire contract itself is meant to change.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmhost.config import Settings
from llmhost.errors import EngineError
from llmhost.faces.tools import create_tool_app
from llmhost.types import Delta, EngineInfo, SamplingParams, TokenLogprob, TopLogprob, Usage
from tests.scripted_engine import Script, ScriptedEngine, scripted_client
from tests.tools.test_agent_loop import ACT, StopEngine
from tests.tools.test_sandbox import MODE

QWEN3_TEMPLATE = (Path(__file__).parent.parent / "fixtures" / "qwen3_chat_template.jinja").read_text()

# Log-probabilities whose JSON spelling differs between Python's json and pydantic's Rust encoder
# (`-1.1920928955078125e-07` vs `-1.1920928955078125e-7`), plus a negative zero and plain values.
LOGPROBS = (-1.1920928955078125e-07, -0.0, -2.5, -13.815510557964274, -3e-05)


class LogprobEngine(ScriptedEngine):
    """ScriptedEngine whose deltas carry log-probabilities (when asked), the prompt's included, and whose
    usage reports prefix-cache hits, so the optional parts of the OpenAI shapes are on the wire too."""

    def info(self) -> EngineInfo:
        return dataclasses.replace(super().info(), supports_prompt_logprobs=True)

    def generate(
        self, prompt_tokens: Sequence[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[Delta]:
        self._prompt = list(prompt_tokens)
        return super().generate(prompt_tokens, params, request_id)

    def _prompt_scores(self, num_top: int) -> list[TokenLogprob | None]:
        prompt = self._prompt
        return [None] + [
            TokenLogprob(
                t,
                bytes([t]),
                LOGPROBS[p % len(LOGPROBS)],
                tuple(
                    TopLogprob(j + 65, bytes([j + 65]), LOGPROBS[j % len(LOGPROBS)]) for j in range(num_top)
                ),
                rank=p,
            )
            for p, t in enumerate(prompt[1:], start=1)
        ]

    async def _replay(self, script: Script, num_prompt: int, params: SamplingParams) -> AsyncIterator[Delta]:
        k = 0
        scores = None if params.prompt_logprobs is None else self._prompt_scores(params.prompt_logprobs)
        async for delta in super()._replay(script, num_prompt, params):
            delta.prompt_logprobs, scores = scores, None
            if params.logprobs is not None and delta.text:
                raw = delta.text.encode()
                top = tuple(
                    TopLogprob(j, raw[: j + 1], LOGPROBS[(k + j + 1) % len(LOGPROBS)])
                    for j in range(params.logprobs)
                )
                delta.logprobs = [TokenLogprob(k, raw, LOGPROBS[k % len(LOGPROBS)], top)]
                k += 1
            if delta.usage is not None:
                delta.usage = Usage(delta.usage.prompt_tokens, delta.usage.completion_tokens, cached_tokens=3)
            yield delta


class FallbackEngine(ScriptedEngine):
    """As a fallback chain (`engines/fallback.py`): `/api/v1/model/info` adds its load report."""

    def info(self) -> EngineInfo:
        report = {
            "chosen_engine": "llama.cpp",
            "chosen_model": "(embedded)",
            "candidates": [{"engine": "vllm", "model": "x"}, {"engine": "llama.cpp", "model": "(embedded)"}],
            "fallback_failures": [{"engine": "vllm", "model": "x", "error": "no GPU"}],
        }
        return dataclasses.replace(super().info(), load_report=report)


@dataclass(frozen=True)
class Case:
    """Requests sent in order to a fresh app; the answer to the last one is compared."""

    requests: list[tuple[str, str, dict[str, Any] | None]]
    scripts: list[list[str | Exception]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    engine: type[ScriptedEngine] = LogprobEngine  # the code loop's: StopEngine (stop strings honoured)


HI = [{"role": "user", "content": "Hi"}]
THINKING = ["<thi", "nk>\nThe user ", "says hi.\n</th", "ink>\n\n", "你好", "!"]
CALL = [
    'I will check.\n<tool_call>\n{"name": "get_weather", ',
    '"arguments": {"city": "Paris"}}\n</tool_call>',
]
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
]
JUDGED = [
    {"question": "Red planet? A. Venus B. Mars", "completion": "<think>Mars.</think><answer>B</answer>",
     "solution": "B"},
    {"question": "Red planet? A. Venus B. Mars", "completion": "<answer>B</answer>", "solution": "B"},
]  # fmt: skip


def post(path: str, body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [("POST", path, body)]


def get(path: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [("GET", path, None)]


UNLOAD = ("POST", "/api/v1/model/unload", None)

CASES: dict[str, Case] = {
    "models": Case(get("/v1/models"), settings={"served_names": ("main", "alias")}),
    "chat": Case(post("/v1/chat/completions", {"messages": HI}), [["Hello", " 世界", "!"]]),
    "chat_n2_logprobs": Case(
        post("/v1/chat/completions", {"messages": HI, "n": 2, "logprobs": True, "top_logprobs": 2}),
        [["Hello", "!"], ["Bye"]],
    ),
    "chat_stream_n2_usage": Case(
        post(
            "/v1/chat/completions",
            {"messages": HI, "n": 2, "stream": True, "stream_options": {"include_usage": True}},
        ),
        [["Hello", "!"], ["Bye"]],
    ),
    "chat_stream_logprobs_stop": Case(
        post(
            "/v1/chat/completions",
            {"messages": HI, "stream": True, "logprobs": True, "top_logprobs": 1, "max_tokens": 2},
        ),
        [["a", "b", "c"]],
    ),
    "chat_reasoning": Case(
        post("/v1/chat/completions", {"messages": HI}),
        [THINKING],
        {"reasoning_parser": "qwen3"},
        QWEN3_TEMPLATE,
    ),
    "chat_reasoning_cut": Case(
        post("/v1/chat/completions", {"messages": HI, "max_tokens": 2}),
        [THINKING],
        {"reasoning_parser": "qwen3"},
        QWEN3_TEMPLATE,
    ),
    "chat_reasoning_stream_n2": Case(
        post("/v1/chat/completions", {"messages": HI, "n": 2, "stream": True}),
        [THINKING, ["<think>", "Hm", "</think>", "Bye"]],
        {"reasoning_parser": "qwen3"},
        QWEN3_TEMPLATE,
    ),
    "chat_stream_error": Case(
        post("/v1/chat/completions", {"messages": HI, "stream": True}), [["Hel", EngineError("boom")]]
    ),
    "chat_tools": Case(
        post("/v1/chat/completions", {"messages": HI, "tools": TOOLS}), [CALL], template=QWEN3_TEMPLATE
    ),
    "chat_tools_stream": Case(
        post("/v1/chat/completions", {"messages": HI, "tools": TOOLS, "stream": True}),
        [CALL],
        template=QWEN3_TEMPLATE,
    ),
    "code_loop": Case(
        post("/v1/chat/completions", {"messages": HI}),
        [ACT, ["The answer is 42."]],
        {"code_tools": True, "sandbox": MODE},
        engine=StopEngine,
    ),
    "code_loop_stream": Case(
        post(
            "/v1/chat/completions",
            {"messages": HI, "stream": True, "stream_options": {"include_usage": True}},
        ),
        [ACT, ["The answer is 42."]],
        {"code_tools": True, "sandbox": MODE},
        engine=StopEngine,
    ),
    "code_loop_no_turns": Case(
        post("/v1/chat/completions", {"messages": HI, "code_tools": True, "max_turns": 0}),
        [["Just text."]],
        engine=StopEngine,
    ),
    "completions_echo_logprobs": Case(
        post("/v1/completions", {"prompt": "Say: ", "echo": True, "logprobs": 2, "n": 2}),
        [["Hi", " there"], ["Yo"]],
    ),
    "completions_stream": Case(
        post(
            "/v1/completions",
            {
                "prompt": ["A", "B"],
                "echo": True,
                "logprobs": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        [["1", "2"], ["3"]],
    ),
    "simple_chat": Case(post("/api/v1/chat", {"message": "Hi"}), [THINKING], template=QWEN3_TEMPLATE),
    "simple_chat_split": Case(
        post("/api/v1/chat", {"message": "Hi", "split_thinking": True}), [THINKING], template=QWEN3_TEMPLATE
    ),
    "simple_chat_error": Case(post("/api/v1/chat", {"message": 3})),
    "simple_stream": Case(
        post("/api/v1/chat/stream", {"message": "Hi"}), [THINKING], template=QWEN3_TEMPLATE
    ),
    "simple_stream_split": Case(
        post("/api/v1/chat/stream", {"message": "Hi"}),
        [THINKING],
        {"reasoning_parser": "qwen3"},
        QWEN3_TEMPLATE,
    ),
    "simple_stream_error": Case(
        post("/api/v1/chat/stream", {"message": "Hi"}), [["Hel", EngineError("boom")]]
    ),
    "simple_health": Case(get("/api/v1/health")),
    "simple_health_unloaded": Case([UNLOAD, ("GET", "/api/v1/health", None)]),
    "simple_model_info": Case(get("/api/v1/model/info")),
    "simple_model_info_fallback": Case(get("/api/v1/model/info"), engine=FallbackEngine),
    "simple_load": Case(post("/api/v1/model/load", {})),
    "simple_reload": Case([UNLOAD, ("POST", "/api/v1/model/load", {})]),
    "simple_unload": Case([UNLOAD]),
    "simple_unload_twice": Case([UNLOAD, UNLOAD]),
    "predict_root": Case(get("/")),
    "predict_root_batch": Case(get("/"), settings={"batch_mode": True}),
    "predict_root_unloaded": Case([UNLOAD, ("GET", "/", None)]),
    "predict_one": Case(post("/predict", {"prompt": "Hi"}), [["<think>x</think>", "Paris"]]),
    "predict_batch": Case(post("/predict", {"prompt": ["Hi", "Ho"]}), [["A"], ["B"]]),
    "predict_error": Case(post("/predict", {"prompt": 3})),
    "rewards": Case(post("/v1/rewards/consistency", {"items": JUDGED}), [["B"]]),
    "live": Case(get("/live")),
    "health": Case(get("/health")),
    "health_unloaded": Case([UNLOAD, ("GET", "/health", None)]),
    "ready": Case(get("/ready")),
    "ready_unloaded": Case([UNLOAD, ("GET", "/ready", None)]),
    "observation": Case(
        post(
            "/get_observation",
            {"trajectory_ids": ["a", "b"], "actions": ["<python>print(1)</python>", "no code"]},
        ),
        settings={"sandbox": MODE},
    ),
}

# Values that change run to run; the shape around them (and int vs float) is kept.
_VOLATILE = [
    (re.compile(r"\b(chatcmpl|cmpl)-[0-9a-f]{32}"), r"\1-ID"),
    (re.compile(r"\bcall_[0-9a-f]{24}"), "call_ID"),
    (re.compile(r'("created": ?)\d+'), r"\g<1>0"),
    (re.compile(r'("(?:duration_s|loop_overhead_s)": ?)(\d+\.\d+|\d+(?=e))(e[-+]?\d+)?'), r"\g<1>0.5"),
    (re.compile(r'("mode": ?)"(?:bwrap|rlimits)"'), r'\1"MODE"'),
]


def normalise(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


async def answer(case: Case) -> str:
    """`STATUS content-type` then the body, normalised."""
    engine = case.engine()
    if case.template is not None:
        engine.chat_template = case.template
    engine.queue(*case.scripts)
    async with scripted_client(engine, **case.settings) as client:
        for method, path, body in case.requests:
            r = await client.request(method, path, json=body)
    return f"{r.status_code} {r.headers['content-type']}\n{normalise(r.text)}"


@pytest.mark.parametrize("name", sorted(CASES))
async def test_bytes_are_unchanged(name: str) -> None:
    assert await answer(CASES[name]) == EXPECTED[name]


# -- /openapi.json ---------------------------------------------------------------------------------
# What each route answers with 200: the model of a JSON answer, and of the `data:` payloads of a stream.
DOCUMENTED = {
    "GET /live": ("LiveResponse", None),
    "GET /health": ("HealthResponse", None),
    "GET /ready": ("ReadyResponse", None),
    "GET /metrics": ("string", None),
    "POST /v1/chat/completions": (
        "ChatCompletionResponse|CodeLoopCompletionResponse",
        "ChatCompletionChunk|CodeLoopChunk|ErrorResponse",
    ),
    "GET /v1/models": ("ModelList", None),
    "POST /v1/completions": ("CompletionResponse", "CompletionChunk|ErrorResponse"),
    "POST /api/v1/chat": ("SimpleChatResponse", None),
    "POST /api/v1/chat/stream": (None, "SimpleStreamEvent"),
    "GET /api/v1/health": ("SimpleHealthResponse", None),
    "GET /api/v1/model/info": ("ModelInfoResponse", None),
    "POST /api/v1/model/load": ("ModelLoadResponse", None),
    "POST /api/v1/model/unload": ("ModelUnloadResponse", None),
    "GET /": ("PredictStatusResponse", None),
    "POST /predict": ("PredictResponse", None),
    "POST /get_observation": ("ObservationResponse", None),
    "POST /v1/rewards/consistency": ("ConsistencyResponse", None),
}
# Answers other than 200 that routes send themselves (errors of each face come on top, as 4XX/5XX).
OTHER_STATUSES = {
    "GET /health": {"503": "HealthUnavailableResponse"},
    "GET /ready": {"503": "NotReadyResponse"},
    "GET /api/v1/health": {"503": "SimpleHealthResponse"},
    "POST /api/v1/model/load": {"500": "ModelLoadResponse"},
    "GET /": {"503": "PredictUnavailableResponse"},
}
# The shape each face answers every 4xx and 5xx with (the ops routes answer none of their own).
ERROR_SHAPES = {
    "ErrorResponse": ("/v1/chat/completions", "/v1/models", "/v1/completions", "/v1/rewards/consistency"),
    "SimpleChatResponse": tuple(r.split(" ")[1] for r in DOCUMENTED if " /api/v1/" in r),
    "DetailErrorResponse": ("/", "/predict", "/get_observation"),
}


def schema_name(schema: dict[str, Any]) -> str:
    """`Model`, `A|B` for a union of models, `string`; "" for a schema that says nothing."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return "|".join(schema_name(s) for s in schema["anyOf"])
    return schema.get("title") or schema.get("type") or ""


def answers(operation: dict[str, Any], status: str) -> tuple[str | None, str | None]:
    """The names of a response's JSON (or text) schema and of its event stream's payload schema."""
    content = operation["responses"].get(status, {}).get("content", {})
    body = stream = None
    for media, entry in content.items():
        if media == "text/event-stream":
            stream = schema_name(entry["itemSchema"]["properties"]["data"]["contentSchema"])
        else:
            body = schema_name(entry["schema"])
    return body, stream


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


async def test_openapi_documents_the_answer_of_every_route() -> None:
    async with scripted_client(ScriptedEngine()) as client:
        spec = (await client.get("/openapi.json")).json()
    operations = {
        f"{method.upper()} {path}": op
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
    }
    assert set(DOCUMENTED) <= set(operations)
    for route, op in operations.items():
        body, stream = answers(op, "200")
        assert body or stream, f"{route} does not document its answer"
        assert "" not in (body, stream), f"{route} documents its answer as any JSON"
        if route not in DOCUMENTED:  # a face added later is held to the rule above only
            continue
        assert (body, stream) == DOCUMENTED[route], route
        for status, name in OTHER_STATUSES.get(route, {}).items():
            assert answers(op, status) == (name, None), f"{route} {status}"
        # Each face's own error shape; never FastAPI's 422 list, which no face answers with.
        assert "422" not in op["responses"], route
        path = route.split(" ", 1)[1]
        error = next((shape for shape, paths in ERROR_SHAPES.items() if path in paths), None)
        assert answers(op, "4XX") == answers(op, "5XX") == (error, None), route
    schemas = spec["components"]["schemas"]
    assert {r.rsplit("/", 1)[-1] for r in refs(spec)} <= set(schemas)
    # Fields that are sent only in some answers are not `required`; the rest are.
    assert schemas["ChatCompletionResponse"]["required"] == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "usage",
    ]
    assert "prompt_tokens_details" not in schemas["CompletionUsage"]["required"]
    assert schemas["SimpleChatResponse"]["required"] == ["response", "success", "error"]


def test_tool_server_app_documents_its_answers() -> None:
    spec = create_tool_app(Settings()).openapi()
    assert answers(spec["paths"]["/get_observation"]["post"], "200") == ("ObservationResponse", None)
    assert answers(spec["paths"]["/get_observation"]["post"], "4XX") == ("DetailErrorResponse", None)
    assert answers(spec["paths"]["/health"]["get"], "200") == ("ToolServerHealthResponse", None)


EXPECTED: dict[str, str] = {
    "chat": (
        "200 application/json\n"
        '{"id":"chatcmpl-ID","object":"chat.completion","created":0,"model":"scripted",'
        '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello 世界!"},"logprobs":null,'
        '"finish_reason":"stop","stop_reason":null}],"usage":{"prompt_tokens":52,'
        '"completion_tokens":3,"total_tokens":55,"prompt_tokens_details":{"cached_tokens":3}}}'
    ),
    "chat_n2_logprobs": (
        "200 application/json\n"
        '{"id":"chatcmpl-ID","object":"chat.completion","created":0,"model":"scripted",'
        '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},'
        '"logprobs":{"content":[{"token":"Hello","logprob":-1.1920928955078125e-07,"bytes":[72,101,'
        '108,108,111],"top_logprobs":[{"token":"H","logprob":-0.0,"bytes":[72]},{"token":"He",'
        '"logprob":-2.5,"bytes":[72,101]}]},{"token":"!","logprob":-0.0,"bytes":[33],'
        '"top_logprobs":[{"token":"!","logprob":-2.5,"bytes":[33]},{"token":"!",'
        '"logprob":-13.815510557964274,"bytes":[33]}]}]},"finish_reason":"stop","stop_reason":null},'
        '{"index":1,"message":{"role":"assistant","content":"Bye"},'
        '"logprobs":{"content":[{"token":"Bye","logprob":-1.1920928955078125e-07,"bytes":[66,121,'
        '101],"top_logprobs":[{"token":"B","logprob":-0.0,"bytes":[66]},{"token":"By","logprob":-2.5,'
        '"bytes":[66,121]}]}]},"finish_reason":"stop","stop_reason":null}],'
        '"usage":{"prompt_tokens":52,"completion_tokens":3,"total_tokens":55,'
        '"prompt_tokens_details":{"cached_tokens":3}}}'
    ),
    "chat_reasoning": (
        "200 application/json\n"
        '{"id":"chatcmpl-ID","object":"chat.completion","created":0,"model":"scripted",'
        '"choices":[{"index":0,"message":{"role":"assistant","content":"你好!",'
        '"reasoning_content":"The user says hi.","reasoning":"The user says hi."},"logprobs":null,'
        '"finish_reason":"stop","stop_reason":null}],"usage":{"prompt_tokens":52,'
        '"completion_tokens":6,"total_tokens":58,"prompt_tokens_details":{"cached_tokens":3}}}'
    ),
    "chat_reasoning_cut": (
        "200 application/json\n"
        '{"id":"chatcmpl-ID","object":"chat.completion","created":0,"model":"scripted",'
        '"choices":[{"index":0,"message":{"role":"assistant","content":null,'
        '"reasoning_content":"The user","reasoning":"The user"},"logprobs":null,'
        '"finish_reason":"length","stop_reason":null}],"usage":{"prompt_tokens":52,'
        '"completion_tokens":2,"total_tokens":54,"prompt_tokens_details":{"cached_tokens":3}}}'
    ),
    "chat_reasoning_stream_n2": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},'
        ' "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 1, "delta": {"role": "assistant", "content": ""},'
        ' "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"reasoning_content": "The user", '
        '"reasoning": "The user"}, "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 1, "delta": {"reasoning_content": "Hm", '
        '"reasoning": "Hm"}, "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"reasoning_content": " says hi.", '
        '"reasoning": " says hi."}, "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 1, "delta": {"content": "Bye"}, "logprobs": null,'
        ' "finish_reason": "stop", "stop_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "你好"}, "logprobs": null, '
        '"finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "!"}, "logprobs": null, '
        '"finish_reason": "stop", "stop_reason": null}]}\n'
        "\n"
        "data: [DONE]\n"
        "\n"
    ),
    "chat_stream_error": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},'
        ' "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "Hel"}, "logprobs": null,'
        ' "finish_reason": null}]}\n'
        "\n"
        'data: {"error": {"message": "boom", "type": "internal_server_error", "param": null, '
        '"code": null}}\n'
        "\n"
        "data: [DONE]\n"
        "\n"
    ),
    "chat_stream_logprobs_stop": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},'
        ' "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "a"}, '
        '"logprobs": {"content": [{"token": "a", "logprob": -1.1920928955078125e-07, "bytes": [97], '
        '"top_logprobs": [{"token": "a", "logprob": -0.0, "bytes": [97]}]}]}, '
        '"finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "b"}, '
        '"logprobs": {"content": [{"token": "b", "logprob": -0.0, "bytes": [98], '
        '"top_logprobs": [{"token": "b", "logprob": -2.5, "bytes": [98]}]}]}, '
        '"finish_reason": "length", "stop_reason": null}]}\n'
        "\n"
        "data: [DONE]\n"
        "\n"
    ),
    "chat_stream_n2_usage": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},'
        ' "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 1, "delta": {"role": "assistant", "content": ""},'
        ' "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "Hello"}, '
        '"logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 1, "delta": {"content": "Bye"}, "logprobs": null,'
        ' "finish_reason": "stop", "stop_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "!"}, "logprobs": null, '
        '"finish_reason": "stop", "stop_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [], "usage": {"prompt_tokens": 52, "completion_tokens": 3, '
        '"total_tokens": 55, "prompt_tokens_details": {"cached_tokens": 3}}}\n'
        "\n"
        "data: [DONE]\n"
        "\n"
    ),
    "chat_tools": (
        "200 application/json\n"
        '{"id":"chatcmpl-ID","object":"chat.completion","created":0,"model":"scripted",'
        '"choices":[{"index":0,"message":{"role":"assistant","content":"I will check.",'
        '"tool_calls":[{"id":"call_ID","type":"function","function":{"name":"get_weather",'
        '"arguments":"{\\"city\\": \\"Paris\\"}"}}]},"logprobs":null,"finish_reason":"tool_calls",'
        '"stop_reason":null}],"usage":{"prompt_tokens":545,"completion_tokens":2,"total_tokens":547,'
        '"prompt_tokens_details":{"cached_tokens":3}}}'
    ),
    "chat_tools_stream": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},'
        ' "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "I will check."}, '
        '"logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, '
        '"id": "call_ID", "type": "function", "function": {"name": "get_weather", '
        '"arguments": ""}}]}, "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, '
        '"function": {"arguments": "{\\"city\\": \\"Paris\\"}"}}]}, "logprobs": null, '
        '"finish_reason": "tool_calls", "stop_reason": null}]}\n'
        "\n"
        "data: [DONE]\n"
        "\n"
    ),
    "code_loop": (
        "200 application/json\n"
        '{"id":"chatcmpl-ID","object":"chat.completion","created":0,"model":"scripted",'
        '"choices":[{"index":0,"message":{"role":"assistant",'
        '"content":"Let me compute.\\n<python>\\nprint(6*7)\\n</python>\\n<result>\\n42\\n</result>\\nThe an'
        'swer is 42."},"logprobs":null,"finish_reason":"stop","stop_reason":null,"num_turns":1,'
        '"tool_results":[{"stdout":"42\\n","stderr":"","exit_code":0,"timed_out":false,'
        '"truncated":false,"duration_s":0.5,"mode":"MODE"}]}],"usage":{"prompt_tokens":52,'
        '"completion_tokens":62,"total_tokens":114,"tool_tokens":23,"num_turns":1,'
        '"loop_overhead_s":0.5}}'
    ),
    "code_loop_no_turns": (
        "200 application/json\n"
        '{"id":"chatcmpl-ID","object":"chat.completion","created":0,"model":"scripted",'
        '"choices":[{"index":0,"message":{"role":"assistant","content":"Just text."},"logprobs":null,'
        '"finish_reason":"stop","stop_reason":null,"num_turns":0,"tool_results":[]}],'
        '"usage":{"prompt_tokens":52,"completion_tokens":10,"total_tokens":62,"tool_tokens":0,'
        '"num_turns":0,"loop_overhead_s":0.5}}'
    ),
    "code_loop_stream": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},'
        ' "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "Let me compute.\\n"}, '
        '"logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, '
        '"delta": {"content": "<python>\\nprint(6*7)\\n"}, "logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "</python>"}, '
        '"logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, '
        '"delta": {"content": "\\n<result>\\n42\\n</result>\\n"}, "logprobs": null, '
        '"finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {"content": "The answer is 42."}, '
        '"logprobs": null, "finish_reason": null}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [{"index": 0, "delta": {}, "logprobs": null, '
        '"finish_reason": "stop", "stop_reason": null, "num_turns": 1}]}\n'
        "\n"
        'data: {"id": "chatcmpl-ID", "object": "chat.completion.chunk", "created": 0, '
        '"model": "scripted", "choices": [], "usage": {"prompt_tokens": 52, "completion_tokens": 62, '
        '"total_tokens": 114, "tool_tokens": 23, "num_turns": 1, "loop_overhead_s": 0.5}}\n'
        "\n"
        "data: [DONE]\n"
        "\n"
    ),
    "completions_echo_logprobs": (
        "200 application/json\n"
        '{"id":"cmpl-ID","object":"text_completion","created":0,"model":"scripted","choices":[{"index":0,'
        '"text":"Say: Hi there","logprobs":{"tokens":["S","a","y",":"," ","Hi"," there"],'
        '"token_logprobs":[null,-0.0,-2.5,-13.815510557964274,-3e-05,-1.1920928955078125e-07,-0.0],'
        '"top_logprobs":[null,{"A":-1.1920928955078125e-07,"B":-0.0},{"A":-1.1920928955078125e-07,"B":-0.0},'
        '{"A":-1.1920928955078125e-07,"B":-0.0},{"A":-1.1920928955078125e-07,"B":-0.0},{"H":-0.0,"Hi":-2.5},'
        '{" ":-2.5," t":-13.815510557964274}],"text_offset":[0,1,2,3,4,5,7]},"finish_reason":"stop",'
        '"stop_reason":null,"prompt_logprobs":[null,{"97":{"logprob":-0.0,"rank":1,"decoded_token":"a"},'
        '"65":{"logprob":-1.1920928955078125e-07,"rank":1,"decoded_token":"A"},"66":{"logprob":-0.0,"rank":2,'
        '"decoded_token":"B"}},{"121":{"logprob":-2.5,"rank":2,"decoded_token":"y"},'
        '"65":{"logprob":-1.1920928955078125e-07,"rank":1,"decoded_token":"A"},"66":{"logprob":-0.0,"rank":2,'
        '"decoded_token":"B"}},{"58":{"logprob":-13.815510557964274,"rank":3,"decoded_token":":"},'
        '"65":{"logprob":-1.1920928955078125e-07,"rank":1,"decoded_token":"A"},"66":{"logprob":-0.0,"rank":2,'
        '"decoded_token":"B"}},{"32":{"logprob":-3e-05,"rank":4,"decoded_token":" "},'
        '"65":{"logprob":-1.1920928955078125e-07,"rank":1,"decoded_token":"A"},"66":{"logprob":-0.0,"rank":2,'
        '"decoded_token":"B"}}]},{"index":1,"text":"Say: Yo","logprobs":{"tokens":["S","a","y",":"," ","Yo"],'
        '"token_logprobs":[null,-0.0,-2.5,-13.815510557964274,-3e-05,-1.1920928955078125e-07],'
        '"top_logprobs":[null,{"A":-1.1920928955078125e-07,"B":-0.0},{"A":-1.1920928955078125e-07,"B":-0.0},'
        '{"A":-1.1920928955078125e-07,"B":-0.0},{"A":-1.1920928955078125e-07,"B":-0.0},{"Y":-0.0,"Yo":-2.5}],'
        '"text_offset":[0,1,2,3,4,5]},"finish_reason":"stop","stop_reason":null,"prompt_logprobs":[null,'
        '{"97":{"logprob":-0.0,"rank":1,"decoded_token":"a"},"65":{"logprob":-1.1920928955078125e-07,'
        '"rank":1,"decoded_token":"A"},"66":{"logprob":-0.0,"rank":2,"decoded_token":"B"}},'
        '{"121":{"logprob":-2.5,"rank":2,"decoded_token":"y"},"65":{"logprob":-1.1920928955078125e-07,'
        '"rank":1,"decoded_token":"A"},"66":{"logprob":-0.0,"rank":2,"decoded_token":"B"}},'
        '{"58":{"logprob":-13.815510557964274,"rank":3,"decoded_token":":"},'
        '"65":{"logprob":-1.1920928955078125e-07,"rank":1,"decoded_token":"A"},"66":{"logprob":-0.0,"rank":2,'
        '"decoded_token":"B"}},{"32":{"logprob":-3e-05,"rank":4,"decoded_token":" "},'
        '"65":{"logprob":-1.1920928955078125e-07,"rank":1,"decoded_token":"A"},"66":{"logprob":-0.0,"rank":2,'
        '"decoded_token":"B"}}]}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,'
        '"prompt_tokens_details":{"cached_tokens":6}}}'
    ),
    "completions_stream": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"id": "cmpl-ID", "object": "text_completion", "created": 0, "model": "scripted", '
        '"choices": [{"index": 0, "text": "A1", "logprobs": {"tokens": ["A", "1"], "token_logprobs": [null, '
        '-1.1920928955078125e-07], "top_logprobs": [null, null], "text_offset": [0, 1]}, '
        '"finish_reason": null}]}\n'
        "\n"
        'data: {"id": "cmpl-ID", "object": "text_completion", "created": 0, "model": "scripted", '
        '"choices": [{"index": 1, "text": "B3", "logprobs": {"tokens": ["B", "3"], "token_logprobs": [null, '
        '-1.1920928955078125e-07], "top_logprobs": [null, null], "text_offset": [0, 1]}, '
        '"finish_reason": "stop"}]}\n'
        "\n"
        'data: {"id": "cmpl-ID", "object": "text_completion", "created": 0, "model": "scripted", '
        '"choices": [{"index": 0, "text": "2", "logprobs": {"tokens": ["2"], "token_logprobs": [-0.0], '
        '"top_logprobs": [null], "text_offset": [0]}, "finish_reason": "stop"}]}\n'
        "\n"
        'data: {"id": "cmpl-ID", "object": "text_completion", "created": 0, "model": "scripted", '
        '"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5, '
        '"prompt_tokens_details": {"cached_tokens": 6}}}\n'
        "\n"
        "data: [DONE]\n"
        "\n"
    ),
    "health": (
        "200 application/json\n"
        '{"status":"healthy","model_loaded":true,"model":"scripted","engine":"scripted",'
        '"device":"cpu","sandbox":null}'
    ),
    "health_unloaded": (
        "503 application/json\n"
        '{"status":"unloaded","model_loaded":false,"model":"scripted","error":null,"sandbox":null}'
    ),
    "live": ('200 application/json\n{"status":"alive"}'),
    "models": (
        "200 application/json\n"
        '{"object":"list","data":[{"id":"main","object":"model","created":0,"owned_by":"llmhost",'
        '"max_model_len":4096,"input_modalities":["text"]},{"id":"alias","object":"model","created":0,'
        '"owned_by":"llmhost","max_model_len":4096,"root":"main","input_modalities":["text"]}]}'
    ),
    "observation": (
        "200 application/json\n"
        '{"observations":["\\n<result>\\n1\\n</result>\\n",{"obs":"",'
        '"invalid_reason":"no code found in <python>…</python> or ```python blocks"}],"dones":[false,'
        'false],"valids":[true,false],"results":[{"stdout":"1\\n","stderr":"","exit_code":0,'
        '"timed_out":false,"truncated":false,"duration_s":0.5,"mode":"MODE"},null]}'
    ),
    "predict_batch": ('200 application/json\n{"response":["A","B"]}'),
    "predict_error": ('422 application/json\n{"detail":"\'prompt\' must be a string or a list of strings"}'),
    "predict_one": ('200 application/json\n{"response":"Paris"}'),
    "predict_root": ('200 application/json\n{"status":"ok"}'),
    "predict_root_batch": ('200 application/json\n{"status":"batch"}'),
    "predict_root_unloaded": (
        '503 application/json\n{"status":"loading","detail":"the model is still loading; retry shortly"}'
    ),
    "ready": ('200 application/json\n{"status":"ready"}'),
    "ready_unloaded": ('503 application/json\n{"status":"not_ready","error":null}'),
    "rewards": (
        "200 application/json\n"
        '{"object":"rewards.consistency","model":"scripted","rewards":[1.0,0.0],"judge_letters":["B",'
        'null],"policy_letters":["B","B"],"reference_letters":["B","B"],"judge_replies":["B",null],'
        '"reasons":[null,"no think block"],"num_judged":1}'
    ),
    "simple_chat": (
        "200 application/json\n"
        '{"response":"<think>\\nThe user says hi.\\n</think>\\n\\n你好!","success":true,"error":null}'
    ),
    "simple_chat_error": (
        "400 application/json\n"
        '{"response":"","success":false,"error":"\'message\': Input should be a valid string"}'
    ),
    "simple_chat_split": (
        "200 application/json\n"
        '{"response":"你好!","success":true,"error":null,"thinking":"The user says hi."}'
    ),
    "simple_health": ('200 application/json\n{"status":"healthy","message":"the model is loaded"}'),
    "simple_health_unloaded": (
        "503 application/json\n"
        '{"status":"unhealthy","message":"the model is unloaded; POST /api/v1/model/load loads it"}'
    ),
    "simple_load": (
        '200 application/json\n{"status":"already_loaded","message":"the model is already loaded"}'
    ),
    "simple_model_info": (
        "200 application/json\n"
        '{"model_name":"scripted","device":"cpu","is_loaded":true,"model_size":1234,'
        '"engine":"scripted","max_model_len":4096,"accepts_images":false}'
    ),
    "simple_model_info_fallback": (
        "200 application/json\n"
        '{"model_name":"scripted","device":"cpu","is_loaded":true,"model_size":1234,"engine":"scripted",'
        '"max_model_len":4096,"accepts_images":false,"chosen_engine":"llama.cpp","chosen_model":"(embedded)",'
        '"candidates":[{"engine":"vllm","model":"x"},{"engine":"llama.cpp","model":"(embedded)"}],'
        '"fallback_failures":[{"engine":"vllm","model":"x","error":"no GPU"}]}'
    ),
    "simple_reload": ('200 application/json\n{"status":"loaded","message":"the model is loaded"}'),
    "simple_stream": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"type": "start", "content": ""}\n'
        "\n"
        'data: {"type": "chunk", "content": "<thi"}\n'
        "\n"
        'data: {"type": "chunk", "content": "nk>\\nThe user "}\n'
        "\n"
        'data: {"type": "chunk", "content": "says hi.\\n</th"}\n'
        "\n"
        'data: {"type": "chunk", "content": "ink>\\n\\n"}\n'
        "\n"
        'data: {"type": "chunk", "content": "你好"}\n'
        "\n"
        'data: {"type": "chunk", "content": "!"}\n'
        "\n"
        'data: {"type": "end", "content": ""}\n'
        "\n"
    ),
    "simple_stream_error": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"type": "start", "content": ""}\n'
        "\n"
        'data: {"type": "chunk", "content": "Hel"}\n'
        "\n"
        'data: {"type": "error", "content": "boom"}\n'
        "\n"
    ),
    "simple_stream_split": (
        "200 text/event-stream; charset=utf-8\n"
        'data: {"type": "start", "content": ""}\n'
        "\n"
        'data: {"type": "thinking", "content": "The user"}\n'
        "\n"
        'data: {"type": "thinking", "content": " says hi."}\n'
        "\n"
        'data: {"type": "chunk", "content": "你好"}\n'
        "\n"
        'data: {"type": "chunk", "content": "!"}\n'
        "\n"
        'data: {"type": "end", "content": ""}\n'
        "\n"
    ),
    "simple_unload": ('200 application/json\n{"status":"unloaded","message":"the model is unloaded"}'),
    "simple_unload_twice": (
        '200 application/json\n{"status":"not_loaded","message":"the model was not loaded"}'
    ),
}
