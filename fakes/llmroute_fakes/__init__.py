"""Fake LLM providers that speak each provider's real wire protocol, with fault knobs.

Test tooling for the sidecar's integration tests and benchmarks: the sidecar's provider adapters are
written against these fakes, and the fakes' fidelity is proven by the providers' official SDKs
(``tests/integration/test_fake_providers.py``). This package only re-exports; see ``server`` for
:class:`FakeProvider`, ``faults`` for the knobs, and one ``*_api`` module per protocol.
"""

from __future__ import annotations

from .faults import FAULT_HEADER, FaultPolicy, FaultSpec, FaultSyntaxError, parse_faults
from .protocol import RecordedRequest
from .protocols import PROTOCOLS
from .server import FakeProvider

__all__ = [
    "FAULT_HEADER",
    "PROTOCOLS",
    "FakeProvider",
    "FaultPolicy",
    "FaultSpec",
    "FaultSyntaxError",
    "RecordedRequest",
    "parse_faults",
]
