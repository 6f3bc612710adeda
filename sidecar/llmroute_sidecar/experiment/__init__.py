"""A/B experiments, the sidecar's part: which arm answered which response (``responses``) and the
``POST /v1/feedback`` endpoint that credits a quality score to it (``http``). The arm of each request
is tagged on its usage record by ``request_policies.py``; the operator's ``experiments/`` counts them.
"""

from __future__ import annotations

from .responses import ResponseArms, Served

__all__ = ["ResponseArms", "Served"]
