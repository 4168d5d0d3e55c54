"""`llmhost serve --ray`: deploy the application on a Ray cluster (or a one-node cluster started here),
say where it serves once every replica has generated, and take it down on SIGINT/SIGTERM.

The command owns its application: stopping it deletes the application (Serve drains each replica for
--shutdown-grace seconds) and, when it started the cluster, the cluster too. To leave an application
running without a driver, deploy the config-file form with `serve deploy` (docs/ray.md).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import httpx

from llmhost.config import Settings

log = logging.getLogger("llmhost")

# A one-node cluster started here moves request bodies (at most --max-request-body-mb) and little
# else through Ray's object store; by default Ray would claim 30% of the machine's memory for it.
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20
CHECK_EVERY_S = 1.0


def run_on_ray(settings: Settings) -> int:
    """Serve until stopped. Returns the exit status: 0 after a clean stop, 1 when start-up failed."""
    from llmhost.cli.startup import StartupError, check_api_key_file, check_model, check_port

    try:
        import ray
        from ray import serve
    except ImportError:
        log.error("--ray needs Ray Serve, which is not installed: pip install 'llmhost[ray]'")
        return 1
    is_local = settings.ray_address is None
    try:
        check_api_key_file(settings)
        if is_local:  # on a cluster, the model and the port are the nodes' business
            check_model(settings)
            check_port(settings.host, settings.port)
    except StartupError as exc:
        log.error("%s", exc)
        return 1

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from an offline server
    try:
        if is_local:
            ray.init(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        else:
            ray.init(address=settings.ray_address)
    except Exception as exc:  # Ray raises ConnectionError, AuthenticationError, RuntimeError, ValueError...
        where = f"join the Ray cluster at {settings.ray_address}" if not is_local else "start a Ray cluster"
        log.error(
            "cannot %s: %s; check --ray-address, and that RAY_AUTH_MODE (and its token) match the cluster's",
            where,
            _last_line(exc),
        )
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    try:
        return _serve(settings, serve)
    except _Stopped:
        log.info("stopped before the application was ready")
        return 1
    finally:
        if is_local:
            serve.shutdown()
        ray.shutdown()


def _serve(settings: Settings, serve: Any) -> int:
    from llmhost.ray_serve.application import build_application
    from llmhost.ray_serve.options import APP_NAME, is_autoscaling

    http_options = {"host": settings.host, "port": settings.port}
    serve.start(http_options=http_options, proxy_location=settings.ray_proxy_location)
    try:
        # Returns once every replica's constructor has returned: each has loaded its model and generated.
        serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
    except RuntimeError as exc:
        log.error("start-up failed: the Ray Serve application did not deploy: %s", _last_line(exc))
        return 1
    try:
        replicas = (
            f"{settings.ray_min_replicas or 1}-{settings.ray_max_replicas} replicas, autoscaling"
            if is_autoscaling(settings)
            else f"{settings.ray_replicas} replica{'s' if settings.ray_replicas != 1 else ''}"
        )
        name = _served_name(settings)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        log.info("serving %s on http://%s:%d through Ray Serve (%s)", name, host, settings.port, replicas)
        try:
            while True:
                time.sleep(CHECK_EVERY_S)
        except _Stopped:
            log.info("stopping: Ray Serve drains each replica for up to %.0f s", settings.shutdown_grace)
        return 0
    finally:
        serve.delete(APP_NAME)


def _served_name(settings: Settings) -> str:
    """The model name clients see, as the app reports it (`GET /v1/models`)."""
    from llmhost.server.auth import load_api_keys

    keys = load_api_keys(settings.api_key, settings.api_key_file)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/v1/models"
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {keys[0]}"} if keys else {}, timeout=30)
        return f"'{response.json()['data'][0]['id']}'"
    except (httpx.HTTPError, ValueError, KeyError, IndexError):
        return "the model"


class _Stopped(Exception):
    """SIGINT or SIGTERM: raised in the main thread wherever it is (deploying or serving), so the cleanup
    in `finally` runs; the default SIGTERM would leave a cluster started here behind."""


def _stop(*_: Any) -> None:
    raise _Stopped


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
