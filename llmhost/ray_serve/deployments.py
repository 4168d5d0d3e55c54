"""The two Ray Serve deployments: the replica (the whole llmhost app around its own engine) and the
ingress (reads each request, picks the replica by affinity, relays the answer back unchanged).

The replica is a plain deployment, not a Serve FastAPI ingress: it is called through a handle by the
ingress, and it is ready only once its model has generated a token, which Serve's ingress start-up
(lifespan started, model still loading) would not wait for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import ray.exceptions
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from llmhost.config import Settings
from llmhost.errors import LlmhostError
from llmhost.ray_serve import fleet_metrics, routing
from llmhost.ray_serve.known_replicas import replica_ids
from llmhost.ray_serve.relay import Message, RelayedRequest, read_body, run_app
from llmhost.server.errors import ErrorShapes, send_json

log = logging.getLogger("llmhost.ray_serve")

READY_POLL_S = 0.1
RETRY_AFTER = (b"retry-after", b"1")
# What a relay failure that happened before the response started tells the client.
_UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, BackPressureError)


class LlmhostReplica:
    """One replica: `create_app` around its engine, answering relayed requests (relay.py)."""

    async def __init__(self, settings: dict[str, Any]) -> None:
        from llmhost.app import create_app
        from llmhost.cli.options import configure_logging
        from llmhost.engines.registry import create_served_engine

        self._lifespan = None
        resolved = Settings.model_validate(settings)  # not Settings(): this node's environment must not add
        configure_logging(resolved.log_level)
        engine, names = create_served_engine(resolved)
        failures: list[BaseException] = []
        self.app = create_app(resolved, engine, served_names=names, on_load_failure=failures.append)
        self._state = self.app.state.llmhost
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        self._headers = [(routing.REPLICA_HEADER.encode(), self._replica_id.encode())]
        lifespan = self.app.router.lifespan_context(self.app)
        await lifespan.__aenter__()  # starts loading the model; `__del__` exits it
        try:
            await self._until_ready(failures)
        except BaseException:
            await lifespan.__aexit__(None, None, None)  # a supervised engine's child must not outlive us
            raise
        self._lifespan = lifespan
        log.info("replica %s ready: '%s'", self._replica_id, names[0])

    async def _until_ready(self, failures: list[BaseException]) -> None:
        """Serve routes to a replica once its constructor returns: only after the model has generated."""
        while not self._state.is_ready:
            if failures:
                exc = failures[0]
                reason = exc.message if isinstance(exc, LlmhostError) else f"{type(exc).__name__}: {exc}"
                raise RuntimeError(f"the model did not load: {reason}")
            await asyncio.sleep(READY_POLL_S)

    async def relay(self, request: RelayedRequest) -> AsyncIterator[list[Message]]:
        async for batch in run_app(self.app, request, extra_headers=self._headers):
            yield batch

    def check_health(self) -> None:
        """Serve's health check, as `/health` decides: a replica whose model failed, was unloaded or whose
        supervised engine is down is replaced (requests it holds meanwhile get its 503)."""
        state = self._state
        if state.load_error is not None:
            raise RuntimeError(f"the model failed to load: {state.load_error}")
        if state.is_unloaded or not state.is_loaded:
            raise RuntimeError("the model is not loaded (POST /api/v1/model/unload)")
        if state.engine_down_reason is not None:
            raise RuntimeError(f"the engine cannot serve: {state.engine_down_reason}")

    async def __del__(self) -> None:
        # After Serve's graceful wait (--shutdown-grace): close the engine and the app's resources.
        if self._lifespan is not None:
            lifespan, self._lifespan = self._lifespan, None
            await lifespan.__aexit__(None, None, None)


class LlmhostIngress:
    """The application's HTTP entry: a plain ASGI app (built by `__serve_build_asgi_app__`)."""

    def __init__(self, replicas: DeploymentHandle, settings: dict[str, Any]) -> None:
        resolved = Settings.model_validate(settings)
        self._relay = replicas.options(method_name="relay", stream=True)
        self._max_body_bytes = int(resolved.max_request_body_mb * 2**20)
        self._app_name = serve.get_replica_context().app_name
        self._shapes = _error_shapes(resolved)

    def __serve_build_asgi_app__(self) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await self._asgi(scope, receive, send)

        return app  # a function, not a bound method: uvicorn would take a method for ASGI2

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: llmhost has none
        body, is_connected = await read_body(receive, self._max_body_bytes)
        if not is_connected:
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if scope["method"] == "GET" and scope["path"] == "/metrics":
            await self._fleet_metrics(scope, send)
            return
        request = RelayedRequest.from_scope(
            scope,
            body,
            affinity_key=routing.affinity_key(scope["path"], headers, body),
            pinned_replica=headers.get(routing.REPLICA_HEADER) or None,
        )
        await self._forward(request, send)

    async def _forward(self, request: RelayedRequest, send: Any) -> None:
        """Send what the replica's app sends. A failure before the response started is a 503 in the
        path's error shape; after it started, the response is cut (the client's read fails, no hang)."""
        stream = self._relay.remote(request)
        is_started = False
        try:
            async for batch in stream:
                for message in batch:
                    is_started = is_started or message["type"] == "http.response.start"
                    await send(message)
        except asyncio.CancelledError:
            stream.cancel()  # the client went away: the replica's app sees the disconnect
            raise
        except Exception as exc:
            if is_started:
                log.error("the replica failed mid-response to %s: %s", request.scope["path"], _reason(exc))
                raise
            await self._unavailable(request.scope["path"], exc, send)

    async def _unavailable(self, path: str, exc: Exception, send: Any) -> None:
        if isinstance(exc, _UNAVAILABLE):
            message = f"the replica serving this request is unavailable ({_reason(exc)}); retry"
        else:
            log.error("relaying %s failed: %s", path, _reason(exc))
            message = f"the replica failed to answer ({_reason(exc)}); retry"
        await send_json(send, 503, self._shapes.body(path, message, "service_unavailable"), RETRY_AFTER)

    async def _fleet_metrics(self, scope: dict[str, Any], send: Any) -> None:
        """Every replica's `/metrics`, merged with a `replica` label (fleet_metrics.py). A replica that
        refuses (no API key, say) answers for all: its response is sent as it is."""
        ids = replica_ids(self._app_name)
        if not ids:  # the router is created by the first request through it
            first = await self._collect(RelayedRequest.from_scope(scope, b""))
            ids = replica_ids(self._app_name) or [first[3]]
        pages: dict[str, str] = {}
        for wanted in ids:
            # One at a time: calls made while serving one request share its internal request id, and
            # Serve's router (Ray 2.60) loses one of two such calls routed at the same time.
            try:
                answer = await self._collect(RelayedRequest.from_scope(scope, b"", pinned_replica=wanted))
            except Exception as exc:
                log.warning("replica %s did not answer /metrics: %s", wanted, _reason(exc))
                continue
            status, headers, body, replica = answer
            if status != 200:
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            if replica == wanted:  # else it was gone and another answered: its page is already counted
                pages[replica] = body.decode()
        page = fleet_metrics.merge(pages)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", fleet_metrics.CONTENT_TYPE.encode())],
            }
        )
        await send({"type": "http.response.body", "body": page})

    async def _collect(self, request: RelayedRequest) -> tuple[int, list[Any], bytes, str]:
        """A relayed request's whole answer: status, headers, body and the replica that answered."""
        status, headers, chunks = 500, [], []
        async for batch in self._relay.remote(request):
            for message in batch:
                if message["type"] == "http.response.start":
                    status, headers = message["status"], list(message.get("headers", ()))
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))
        replica = next((v.decode() for k, v in headers if k.lower() == routing.REPLICA_HEADER.encode()), "")
        return status, headers, b"".join(chunks), replica


async def _lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan handshake: the ingress holds nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _error_shapes(settings: Settings) -> ErrorShapes:
    """Each path's error shape, as the replicas' app registers them: the faces mounted on a scratch app.
    A face that cannot mount outside a real app keeps the default (OpenAI's) shape here."""
    from types import SimpleNamespace

    from fastapi import FastAPI

    from llmhost.app import FACES

    shapes = ErrorShapes()
    scratch = FastAPI()
    scratch.state.llmhost = SimpleNamespace(settings=settings)  # what faces read when they mount
    for face in FACES:
        try:
            face.mount(scratch, shapes)
        except Exception as exc:
            log.debug("error shapes: %s not mounted (%s)", face.__name__, _reason(exc))
    return shapes


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")
