"""Every bad input gets a 4xx in OpenAI's error shape, names the field, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e

GOOD = {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def with_(**changes):
    return {**GOOD, **changes}


CASES = [
    # (name, raw body or json, expected status, expected param or None)
    ("malformed json", b'{"model": "smol", "messages": [', 400, None),
    ("not an object", b"[1, 2, 3]", 400, None),
    (
        "non-utf8 bytes",
        b'{"model": "smol", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        400,
        None,
    ),
    ("wrong type max_tokens", with_(max_tokens="ten"), 400, "max_tokens"),
    ("negative max_tokens", with_(max_tokens=-5), 400, "max_tokens"),
    ("zero max_tokens", with_(max_tokens=0), 400, "max_tokens"),
    ("n over the limit", with_(n=1000), 400, "n"),
    ("empty messages", with_(messages=[]), 400, "messages"),
    ("missing messages", {"model": "smol"}, 400, "messages"),
    ("unknown role", with_(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages.0.role"),
    ("content wrong type", with_(messages=[{"role": "user", "content": 5}]), 400, "messages.0.content"),
    ("temperature out of range", with_(temperature=5), 400, "temperature"),
    ("temperature as string", with_(temperature="hot"), 400, "temperature"),
    ("top_p zero", with_(top_p=0), 400, "top_p"),
    ("top_logprobs too big", with_(logprobs=True, top_logprobs=50), 400, "top_logprobs"),
    ("stop wrong type", with_(stop=5), 400, "stop"),
    ("empty stop string", with_(stop=[""]), 400, "stop"),
    ("stream not bool", with_(stream="yes"), 400, "stream"),
    ("unknown model", with_(model="nope"), 404, "model"),
    ("schema-less json_schema", with_(response_format={"type": "json_schema"}), 400, "response_format"),
]


@pytest.mark.parametrize(("name", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
def test_bad_chat_request(server, name, body, status, param):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        if isinstance(body, bytes):
            r = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        else:
            r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"]
        if param is not None:
            assert error["param"] == param, error
        # ... and the server keeps serving.
        ok = http.post("/v1/chat/completions", json=GOOD)
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "smol", "prompt": [], "max_tokens": 2}, "prompt"),
        ({"model": "smol", "prompt": "hi", "max_tokens": -1}, "max_tokens"),
        ({"model": "smol", "prompt": [[1, 2], "mixed"], "max_tokens": 2}, "prompt"),
        ({"model": "smol", "prompt": [999999999], "max_tokens": 2}, "prompt"),
    ],
)
def test_bad_completion_request(server, body, param):
    r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param)


def test_unknown_route_and_method_are_openai_shaped(server):
    r = httpx.get(f"{server.url}/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(f"{server.url}/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_unknown_route_under_a_face_uses_that_faces_shape(server):
    r = httpx.get(f"{server.url}/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["success"] is False and r.json()["error"]
    r = httpx.get(f"{server.url}/api/v1/chat")
    assert r.status_code == 405 and r.json()["success"] is False
    r = httpx.get(f"{server.url}/predict")
    assert r.status_code == 405 and r.json()["detail"]
