"""The fast paths of ``prom.py`` (labels, inc, observe) and the ids of ``ids.py``."""

from __future__ import annotations

import os

import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from llmroute_sidecar.ids import new_id
from llmroute_sidecar.prom import Counter, Gauge, Histogram, Summary


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


def _exposition(registry: CollectorRegistry) -> list[bytes]:
    return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5, 10.0, -1.0]),  # bucket edges and a negative
        ),
        max_size=30,
    )
)
def test_the_fast_methods_expose_what_prometheus_clients_own_do(values: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buckets = (0.1, 0.5, 1.0, 2.5)
    mine = (
        Counter("c", "c", ["k"], registry=ours),
        Gauge("g", "g", ["k"], registry=ours),
        Histogram("h", "h", ["k"], buckets=buckets, registry=ours),
        Summary("s", "s", ["k"], registry=ours),
    )
    reference = (
        prometheus_client.Counter("c", "c", ["k"], registry=theirs),
        prometheus_client.Gauge("g", "g", ["k"], registry=theirs),
        prometheus_client.Histogram("h", "h", ["k"], buckets=buckets, registry=theirs),
        prometheus_client.Summary("s", "s", ["k"], registry=theirs),
    )
    for counter, gauge, histogram, summary in (mine, reference):
        for value in values:
            if value >= 0:  # both refuse a negative counter increment (checked below)
                counter.labels("a").inc(value)
            gauge.labels("a").inc(value)
            gauge.labels("a").dec(value / 2)
            histogram.labels("a").observe(value)
            summary.labels("a").observe(value)
    assert _exposition(ours) == _exposition(theirs)


def test_the_fast_methods_refuse_what_prometheus_client_refuses() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["k"], registry=registry)
    histogram = Histogram("h", "h", ["k"], registry=registry)
    summary = Summary("s", "s", ["k"], registry=registry)
    gauge = Gauge("g", "g", ["k"], registry=registry)
    for call in (counter.inc, histogram.observe, summary.observe, gauge.inc, gauge.dec):
        with pytest.raises(ValueError, match="missing label values"):
            call(1)  # a labelled parent is not observable
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("a").inc(-1)
    plain = Counter("p", "p", registry=registry)
    plain.inc(2)
    assert _value(registry, "p_total") == 2.0
