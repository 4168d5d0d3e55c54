"""The same llmhost app as a Ray Serve application, over replicas on any number of machines (docs/ray.md).

Two deployments: `LlmhostIngress` reads each request (its headers and body), works out which replica
has what it needs cached (routing.py) and relays the request to an `LlmhostReplica` through a deployment
handle whose request router (router.py) honours that preference; each replica runs the whole app built
by `create_app` around its own engine and answers through relay.py. Why two tiers: Serve's HTTP proxy
routes before the body is read, so only a deployment that has read the body can route by conversation or
prompt prefix (Ray Serve LLM's OpenAI ingress is built the same way for its prefix-aware router).

Only deployments.py, router.py, application.py and launch.py import Ray; the rest of llmhost, and the
pure parts here, import without it.
"""
