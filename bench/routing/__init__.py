"""``python -m bench.routing``: the time :func:`llmroute_sidecar.routing.plan` adds per request."""
