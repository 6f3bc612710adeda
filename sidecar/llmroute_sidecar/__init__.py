"""llmroute sidecar: the localhost router beside each workload.

It serves the OpenAI-compatible HTTP front and the ``llmroute.v1.Router`` gRPC front, and runs from a
``RouterConfig`` (from a file, or pushed by the operator). It must stay lean: it never imports kopf,
the Kubernetes client or ``llmroute_operator``.
"""
