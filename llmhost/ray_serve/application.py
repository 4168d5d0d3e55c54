"""The Ray Serve application: the ingress bound to the replica deployment, with their options.

`build_application(settings)` is what `llmhost serve --ray` runs; `build_app(args)` is the same for Ray
Serve's own config files (`serve run` / `serve deploy`, KubeRay's RayService):

    applications:
      - name: llmhost
        route_prefix: /
        import_path: llmhost.ray_serve.application:build_app
        args: {model: /models/qwen.gguf, ray_replicas: 4}    # any llmhost setting, or config: FILE.yaml
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig

from llmhost.config import Settings
from llmhost.ray_serve import options
from llmhost.ray_serve.deployments import LlmhostIngress, LlmhostReplica


def build_application(settings: Settings) -> serve.Application:
    replica = serve.deployment(LlmhostReplica).options(
        **options.replica_options(settings),
        request_router_config=RequestRouterConfig(
            request_router_class=options.ROUTER_CLASS, request_router_kwargs=options.router_kwargs(settings)
        ),
    )
    ingress = serve.deployment(serve.ingress()(LlmhostIngress)).options(**options.ingress_options(settings))
    replica_settings = options.replica_settings(settings)
    return ingress.bind(replica.bind(replica_settings), replica_settings)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Ray Serve's application builder: `args` are llmhost settings by their config-file keys (plus
    `config`: a YAML file of more), read like `llmhost serve --config`, over the environment."""
    args = dict(args)
    return build_application(Settings.load(args.pop("config", None), **args))
