"""``python -m bench.peers``: the sidecar beside its peers (the Python floor and LiteLLM proxy) in one run."""
