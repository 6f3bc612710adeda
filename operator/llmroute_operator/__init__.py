"""llmroute operator: the kopf control plane.

It reconciles ``LLMRoute``/``LLMBudget`` resources, compiles them with the pure compiler in
``llmroute_proto`` and pushes ``RouterConfig`` to sidecars over gRPC. It never imports
``llmroute_sidecar``; the two share only ``llmroute_proto``.
"""
