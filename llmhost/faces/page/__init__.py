"""The chat page: `GET /` for a browser, and the files it runs on, all from the package.

A person who just started a server opens http://127.0.0.1:8000/ and talks to the model: answers stream
in, the thinking shows apart, and each answer says its time to first token and speed. The page is
hand-written HTML, CSS and JavaScript modules under `static/` (package data; no build step, no CDN, no
web fonts), and talks only to this server's own routes: `/v1/chat/completions` (streamed), `/v1/models`,
`/health` and `GET /prompt_templates`, the one route this face adds for it.

Who answers `GET /`: this face answers a request whose Accept header ranks HTML over JSON (a browser);
every other `GET /` falls through to the predict face's readiness JSON, which the evaluation harness
reads. `PageRoute` makes that split in route matching, so exactly one route owns each request and the
predict face knows nothing of the page. The page face is mounted before the predict face for that.

With `--api-key`, the page and its files load without a key, as llama-server serves its web UI: they
hold no data and reach no model, and a browser has to load them to be able to ask for the key. Every
API call the page makes needs the key as usual; on a 401 the page asks for it (`is_public_request`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from pydantic import Field
from starlette.routing import Match
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from llmhost.conversation.prompt_templates import PromptTemplate, library_for, with_defaults
from llmhost.faces.wire import FaceRouter, ResponseModel
from llmhost.server.deps import StateDep
from llmhost.server.errors import ErrorShapes
from llmhost.server.negotiation import accept_header, prefers_html

PAGE_FILE = Path(__file__).with_name("index.html")
STATIC_DIR = Path(__file__).with_name("static")
ASSETS_PATH = "/page"  # the page's scripts and styles: /page/app.js, /page/style.css…

# The page runs only its own files and talks only to its own server; nothing it shows is ever parsed as
# HTML (see static/markdown.js), and this policy makes the browser refuse inline scripts and outside
# requests even if that ever failed.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # revalidate, so an upgraded server serves its new page at once
}

# Variables a named prompt template may read that the server fills itself: the question is the last user
# message, the date and time are the server's. The page offers a field for every other one.
SERVER_FILLED = frozenset({"question", "today_date", "current_time"})


class PageRoute(APIRoute):
    """Matches only a request that prefers HTML; an API client's `GET /` goes on to the predict face."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE and not prefers_html(accept_header(scope)):
            return Match.NONE, {}
        return match, child_scope


def is_public_request(scope: Scope) -> bool:
    """The page and its files, which load without an API key (see the module docstring)."""
    if scope["method"] not in ("GET", "HEAD"):
        return False
    path = scope["path"]
    return path.startswith(f"{ASSETS_PATH}/") or (path == "/" and prefers_html(accept_header(scope)))


class TemplateVariable(ResponseModel):
    name: str
    is_required: bool = Field(description="False when the template has a default for it (custom_prompt).")


class PromptTemplateInfo(ResponseModel):
    name: str
    has_system_prompt: bool = Field(description="The template's system part replaces the request's.")
    variables: list[TemplateVariable] = Field(
        description="What `template_vars` can give it; the question, date and time are filled by the server."
    )


class PromptTemplatesResponse(ResponseModel):
    templates: list[PromptTemplateInfo]


router = FaceRouter(tags=["page"])


@router.get("/prompt_templates")
async def prompt_templates(state: StateDep) -> PromptTemplatesResponse:
    """The named prompt templates a chat request can pick with `prompt_template` (built-ins and
    `--prompt-templates`), and the variables each one reads."""
    library = library_for(state.settings.prompt_templates)
    return PromptTemplatesResponse(templates=[_describe(library.templates[name]) for name in library.names])


def _describe(template: PromptTemplate) -> PromptTemplateInfo:
    names = template.variables - SERVER_FILLED
    defaulted = with_defaults({}).keys()
    # `context` and `documents` fill each other, so a template reading both needs only one of them.
    either = {"context", "documents"} <= names
    variables = [
        TemplateVariable(
            name=name, is_required=name not in defaulted and not (either and name in ("context", "documents"))
        )
        for name in sorted(names)
    ]
    return PromptTemplateInfo(
        name=template.name, has_system_prompt=template.system is not None, variables=variables
    )


async def page() -> FileResponse:
    return FileResponse(PAGE_FILE, media_type="text/html", headers=SECURITY_HEADERS)


# Not in the OpenAPI schema: `GET /` there is the predict face's JSON, and docs/api.md describes both.
router.add_api_route("/", page, methods=["GET"], include_in_schema=False, route_class_override=PageRoute)


def mount(app: FastAPI, shapes: ErrorShapes) -> None:
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="page-assets")
