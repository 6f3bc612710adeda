"""Batch jobs through the OpenAI Files and Batches API, kept in a shared Redis (Streams).

``objects.py`` (pure: the objects and line formats), ``store.py`` (Redis), ``worker.py`` (runs the
lines), ``runner.py`` (a line as a router-service request), ``http.py`` (the endpoints).
docs/batches.md tells users how it behaves.
"""

from .http import add_batch_routes
from .runner import service_runner
from .store import BatchStore
from .worker import BatchWorker, WorkerSettings

__all__ = ["BatchStore", "BatchWorker", "WorkerSettings", "add_batch_routes", "service_runner"]
