"""The overhead benchmark: the sidecar against direct calls and a bare passthrough (``run.py``)."""
