"""The page face in-process (no browser): who answers `GET /`, the page's files, `GET /prompt_templates`,
the API-key exemption, and that the files ship in the wheel."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import httpx
import pytest

from llmhost.faces import page
from llmhost.server.negotiation import prefers_html
from tests.scripted_engine import ScriptedEngine, scripted_client

ROOT = Path(__file__).resolve().parents[2]
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


async def test_a_browser_gets_the_page_and_api_clients_keep_the_json():
    async with scripted_client(ScriptedEngine()) as client:
        r = await client.get("/", headers={"accept": BROWSER})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="page/app.js">' in r.text
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
        for accept in ("*/*", "application/json", "", "text/html;q=0.5, application/json"):
            r = await client.get("/", headers={"accept": accept})
            assert r.status_code == 200 and r.json() == {"status": "ok"}, accept
        # A wrong method on `/` is still the predict face's, in its shape, browser or not.
        r = await client.post("/", headers={"accept": BROWSER})
        assert r.status_code == 405 and set(r.json()) == {"detail"}
        # `GET /` in the schema stays the predict contract's JSON.
        schema = client.app.openapi()["paths"]["/"]["get"]
        assert "application/json" in schema["responses"]["200"]["content"]


async def test_the_page_loads_while_the_model_does_not_yet_answer():
    from llmhost.app import create_app
    from llmhost.config import Settings

    app = create_app(Settings(), ScriptedEngine(), served_names=["x"])  # ASGITransport loads nothing
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/", headers={"accept": BROWSER})).status_code == 200
        r = await client.get("/")
        assert r.status_code == 503 and r.json()["status"] == "loading"


async def test_every_file_the_page_loads_comes_from_the_server():
    async with scripted_client(ScriptedEngine()) as client:
        html = (await client.get("/", headers={"accept": BROWSER})).text
        urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
        scripts = {url for url in urls if url.endswith(".js")}
        pending = [u for u in urls if not u.startswith("data:")]
        seen = set()
        while pending:
            url = pending.pop()
            assert not re.match(r"^[a-z]+:|^//", url), url  # relative: same origin, no CDN, no fonts
            path = "/" + url.removeprefix("./").removeprefix("/")
            if path in seen:
                continue
            seen.add(path)
            r = await client.get(path)
            assert r.status_code == 200 and r.content, path
            if path.endswith(".js"):
                assert "javascript" in r.headers["content-type"], path
                for imported in re.findall(r"""^import .* from "(\./[^"]+)";$""", r.text, flags=re.M):
                    pending.append("page/" + imported.removeprefix("./"))
                assert "innerHTML" not in r.text and "insertAdjacentHTML" not in r.text, path
            if path.endswith(".css"):
                assert "@import" not in r.text and "url(" not in r.text  # no outside fonts or images
        assert scripts and {"/page/markdown.js", "/page/stream.js", "/page/store.js"} <= seen
        assert (await client.get("/page/nothing.js")).status_code == 404


async def test_prompt_templates_lists_builtins_and_the_servers_own(tmp_path):
    (tmp_path / "faq.user.jinja").write_text("{{ documents }} {{ audience }} {{ question }} {{ today_date }}")
    async with scripted_client(ScriptedEngine(), prompt_templates=str(tmp_path)) as client:
        r = await client.get("/prompt_templates")
    assert r.status_code == 200
    templates = {t["name"]: t for t in r.json()["templates"]}
    assert list(templates) == ["faq", "rag-en", "rag-zh", "simple-zh"]
    assert templates["rag-en"] == {
        "name": "rag-en",
        "has_system_prompt": True,
        "variables": [
            {"name": "context", "is_required": True},
            {"name": "custom_prompt", "is_required": False},
        ],
    }
    assert templates["faq"] == {
        "name": "faq",
        "has_system_prompt": False,
        "variables": [{"name": "audience", "is_required": True}, {"name": "documents", "is_required": True}],
    }


async def test_with_an_api_key_the_page_loads_and_everything_else_needs_the_key():
    async with scripted_client(ScriptedEngine(), api_key=["k1"]) as client:
        public = [("/", BROWSER), ("/page/app.js", "*/*"), ("/page/style.css", "text/css,*/*;q=0.1")]
        for path, accept in public:
            assert (await client.get(path, headers={"accept": accept})).status_code == 200, path
        for method, path, accept in [
            ("GET", "/", "*/*"),  # the predict contract's readiness JSON
            ("GET", "/", "application/json"),
            ("POST", "/", BROWSER),
            ("GET", "/prompt_templates", BROWSER),
            ("GET", "/v1/models", BROWSER),
            ("POST", "/page/app.js", BROWSER),
        ]:
            r = await client.request(method, path, headers={"accept": accept})
            assert r.status_code == 401, (method, path, accept)
        r = await client.get("/prompt_templates", headers={"authorization": "Bearer k1"})
        assert r.status_code == 200


@pytest.mark.parametrize(
    ("accept", "is_html"),
    [
        ("*/*", False),
        ("", False),
        ("application/json", False),
        ("text/html", True),
        ("text/html;q=0.5, application/json", False),
        ("application/json;q=0.5, text/html", True),
        ("text/html;q=0", False),
        (BROWSER, True),
    ],
)
def test_prefers_html(accept, is_html):
    assert prefers_html(accept) is is_html


def test_the_page_files_ship_in_the_wheel():
    """Every file of the page matches pyproject.toml's package data for `llmhost.faces.page`."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["llmhost.faces.page"]
    package = Path(page.__file__).parent
    files = [p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()]
    shipped = [f for f in files if f.endswith((".html", ".js", ".css"))]
    assert "index.html" in shipped and "static/app.js" in shipped
    missing = [f for f in shipped if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert not missing, f"add to [tool.setuptools.package-data] llmhost.faces.page: {missing}"
