"""The fast label path of ``prom.py`` and the ids of ``ids.py``."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry

from llmroute_sidecar.ids import new_id
from llmroute_sidecar.prom import Counter, Gauge, Histogram


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_an_existing_label_set_gets_the_same_child_by_any_spelling() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["model", "status"], registry=registry)
    first = counter.labels("chat", "429")
    assert counter.labels("chat", "429") is first  # the fast path
    assert counter.labels(model="chat", status="429") is first  # keywords: prometheus_client's path
    assert counter.labels("chat", 429) is first  # a non-string value: converted, same series
    first.inc()
    counter.labels("chat", 429).inc(2)
    assert _value(registry, "c_total", model="chat", status="429") == 3.0


def test_a_removed_or_cleared_label_set_starts_again_from_zero() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("g", "g", ["backend"], registry=registry)
    histogram = Histogram("h", "h", ["backend"], buckets=(1.0,), registry=registry)
    gauge.labels("a").set(5)
    histogram.labels("a").observe(0.5)
    gauge.remove("a")
    histogram.clear()
    assert _value(registry, "g", backend="a") is None
    assert _value(registry, "h_count", backend="a") is None
    gauge.labels("a").inc()
    histogram.labels("a").observe(2.0)
    assert _value(registry, "g", backend="a") == 1.0
    assert _value(registry, "h_count", backend="a") == 1.0
    assert _value(registry, "h_bucket", backend="a", le="1.0") == 0.0


def test_ids_are_32_hex_digits_and_do_not_repeat() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id to the parent, then out without running pytest's teardown
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 32 and child != new_id()
