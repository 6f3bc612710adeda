"""kopf watch handlers and the status writers.

``routes``, ``budgets`` and ``secrets`` turn watch events into the
:class:`~llmroute_operator.index.ClusterIndex` (``@kopf.on.event`` only: no finalizers, nothing written
to the objects); ``status`` writes ``LLMRoute``/``LLMBudget`` status when it changed, on the leader;
``sync`` tells when the initial listing has been indexed. ``app.py`` registers them into its registry.
"""
