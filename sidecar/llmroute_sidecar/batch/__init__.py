"""Batch jobs through the OpenAI Files and Batches API, kept in a shared Redis (Streams).

``objects.py`` (pure: the objects and line formats), ``store.py`` (Redis), ``worker.py`` (runs the
lines), ``runner.py`` (a line as a router-service request), ``expiry.py`` (the completion window),
``http.py`` (the endpoints). Lines bound for a provider's own batch API: ``provider_batches.py``
(the worker's entry), ``provider_lines.py`` (admission and sealing), ``provider_poller.py``
(submit, poll, collect), ``submissions.py`` (their Redis state), ``provider_client.py`` and
``provider_wire.py`` (the providers' HTTP calls and formats), ``line_accounting.py`` (usage at the
discounted price). docs/batches.md tells users how it behaves.
"""

from .http import add_batch_routes
from .provider_batches import ProviderBatches, ProviderBatchSettings
from .runner import service_runner
from .store import BatchStore
from .worker import BatchWorker, WorkerSettings

__all__ = [
    "BatchStore",
    "BatchWorker",
    "ProviderBatchSettings",
    "ProviderBatches",
    "WorkerSettings",
    "add_batch_routes",
    "service_runner",
]
