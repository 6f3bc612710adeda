"""The fuzz tier: generated bad input against a real sidecar process (``make test-fuzz``)."""
