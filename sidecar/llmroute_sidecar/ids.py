"""Request and response ids: 128 random bits as 32 lowercase hex digits, like ``uuid4().hex``.

Ids must be unique, not secret, so they come from a PRNG seeded once from the OS (and again in a
forked child) instead of ``uuid.uuid4()``, which costs a ``getrandom`` system call and a UUID object
on every request (``http_front.py`` names each request; ``service.py`` and the adapters use the same).
"""

from __future__ import annotations

import os
import random

__all__ = ["new_id"]

_rng = random.Random(os.urandom(32))
_bits = _rng.getrandbits
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def new_id() -> str:
    return f"{_bits(128):032x}"
