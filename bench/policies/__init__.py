"""``python -m bench.policies``: what a budget, a rate limit and the exact cache add per request."""
