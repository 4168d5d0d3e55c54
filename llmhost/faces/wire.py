"""What the faces' response models share: the base class, the router that sends them, and how an
event stream of them is documented in `/openapi.json`.

Bytes on the wire are a contract (clients and tests compare exact JSON), so the encodings are the
ones the faces used when they still built dicts:

* A JSON answer goes out through `JSONResponse` (`json.dumps`, compact separators), not FastAPI's
  pydantic fast path: pydantic writes `1e-07` as `1e-7`, which changes logprobs on the wire.
* A streamed event's `data:` payload is `json.dumps` with its default separators (`", "`, `": "`),
  non-ASCII kept as is (`ResponseModel.sse_data`).
* Optional keys are left out, not sent as null (`exclude_unset`, which pydantic applies in its core:
  a serializer of our own would cost a Python call per model, several per streamed token).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, TypeAdapter


class ResponseModel(BaseModel):
    """A wire model of (part of) an answer.

    A field without a default is always sent, `null` included. A field with a default is sent only
    when the face set it, so optional keys (`usage` on the last chunk only, `thinking` only when it is
    split…) are absent rather than `null`; setting one to None sends `null`. `FaceRouter` and the
    helpers below dump with `exclude_unset` for that."""

    model_config = ConfigDict(extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The answer as the JSON object that is sent."""
        return self.model_dump(exclude_unset=True)

    def sse_data(self) -> str:
        """The `data:` payload of one server-sent event."""
        return json.dumps(self.wire(), ensure_ascii=False)


class FaceRouter(APIRouter):
    """The `APIRouter` of every face: a route's response model goes out through `JSONResponse`, its
    unset optional fields left out (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_response_class=JSONResponse, **kwargs)

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["response_model_exclude_unset"] = True  # the decorators always pass their default, False
        super().add_api_route(path, endpoint, **kwargs)


class DetailErrorResponse(ResponseModel):
    """FastAPI's plain error shape, which the predict and tool faces answer with."""

    detail: str


def error_responses(model: type[ResponseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """A router's `responses=`: every 4xx and 5xx of its routes answers in its face's `model` shape."""
    return {
        "4XX": {"model": model, "description": description},
        "5XX": {"model": model, "description": description},
    }


def json_response(model: ResponseModel, status_code: int) -> JSONResponse:
    """An answer with a status other than the route's 200 (document it in the route's `responses`)."""
    return JSONResponse(model.wire(), status_code=status_code)


def event_stream(payload: Any, description: str) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` entry for a 200 that is (or, with `stream: true`, may be) a
    `text/event-stream` whose `data:` payloads are `payload` (a model or a union of models).

    The shape is the one FastAPI gives its own SSE routes (`itemSchema`, the JSON in `data`). The
    payload schema is inlined: models used only inside a stream have no entry in `components`."""
    schema = _inline_refs(TypeAdapter(payload).json_schema(mode="serialization"))
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}
    item = {"type": "object", "required": ["data"], "properties": {"data": data}}
    return {200: {"description": description, "content": {"text/event-stream": {"itemSchema": item}}}}


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every `$ref` into its `$defs` replaced by the definition (response models do not
    nest recursively)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)
