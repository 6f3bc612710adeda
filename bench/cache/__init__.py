"""``python -m bench.cache``: what the semantic cache's local search and Redis stream mirror cost."""
