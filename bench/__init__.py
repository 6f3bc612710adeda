"""Benchmarks for llmroute (``bench/overhead``: the sidecar's cost on the hot path)."""
