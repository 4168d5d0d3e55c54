"""The API docs load nothing from outside the server: an offline machine gets a working /docs."""

from __future__ import annotations

import re

from tests.scripted_engine import ScriptedEngine, scripted_client


async def test_docs_pages_and_their_assets_come_from_the_server():
    async with scripted_client(ScriptedEngine()) as client:
        for page in ("/docs", "/redoc"):
            r = await client.get(page)
            assert r.status_code == 200 and "text/html" in r.headers["content-type"]
            urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
            assert urls, r.text
            assert all(u.startswith("/") for u in urls), urls  # same origin: no CDN, no web fonts
            for url in urls:
                asset = await client.get(url)
                assert asset.status_code == 200 and len(asset.content) > 1000, url
            assert "cdn.jsdelivr.net" not in r.text and "fonts.googleapis.com" not in r.text
        r = await client.get("/openapi.json")
        assert r.status_code == 200 and "/v1/chat/completions" in r.json()["paths"]
