"""API keys and CORS on a real server."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import start_server, stop_server, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    key_file = tmp / "keys.txt"
    key_file.write_text("# team keys\nkey-from-file\n\n")
    srv = start_server(
        tmp,
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "2",
        "--api-key",
        "key-one",
        "--api-key-file",
        str(key_file),
        "--allowed-origins",
        "http://app.example",
    )
    yield srv
    stop_server(srv)


PROTECTED = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/api/v1/model/info"),
    ("POST", "/predict"),
    ("GET", "/"),
    ("GET", "/prompt_templates"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_routes_need_a_key(locked_server, method, path):
    url = locked_server.url + path
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-one"}):
        r = httpx.request(method, url, headers=headers, json={})
        assert r.status_code == 401, (path, headers)
        assert r.headers["www-authenticate"] == "Bearer"
    body = httpx.request(method, url).json()
    if path.startswith("/api/v1/"):
        assert body["success"] is False and body["error"]
    elif path in ("/predict", "/"):
        assert body["detail"]
    else:
        assert body["error"]["code"] == "invalid_api_key"


def test_probes_stay_open(locked_server):
    wait_ready(locked_server)  # without a key: a probe that asked for one would never answer 200
    for path in ("/live", "/health", "/ready"):
        assert httpx.get(locked_server.url + path).status_code == 200


def test_the_chat_page_loads_without_a_key(locked_server):
    """As llama-server's web UI: the page and its files are open, and the page asks for the key."""
    r = httpx.get(locked_server.url + "/", headers={"accept": "text/html"})
    assert r.status_code == 200 and "page/app.js" in r.text
    assert httpx.get(locked_server.url + "/page/app.js").status_code == 200


def test_each_key_works_through_the_sdk(locked_server):
    for key in ("key-one", "key-from-file"):
        client = openai.OpenAI(base_url=f"{locked_server.url}/v1", api_key=key, max_retries=0)
        r = client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert r.choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{locked_server.url}/v1", api_key="nope", max_retries=0).models.list()


def test_cors_preflight_and_headers(locked_server):
    r = httpx.options(
        f"{locked_server.url}/v1/chat/completions",
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    r = httpx.get(f"{locked_server.url}/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
