"""Admission webhooks served by kopf: ``admission`` validates LLMRoute/LLMBudget with
``validation.py``; ``pods`` injects the sidecar on Pod CREATE, with the pure patch logic in ``inject``."""
