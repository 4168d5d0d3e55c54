"""Route dependencies: routes receive the shared state through these aliases, never globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from llmhost.server.state import ServerState


def get_state(request: Request) -> ServerState:
    return request.app.state.llmhost


StateDep = Annotated[ServerState, Depends(get_state)]
