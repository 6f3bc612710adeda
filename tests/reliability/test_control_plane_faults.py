"""Control-plane faults under load: nothing the app sends fails, and every cent is counted once.

The stack of ``tests/e2e/test_operator_ha.py``, run as in a cluster: a real kube-apiserver + etcd,
two ``llmroute-operator`` replicas (TLS from files, a Lease with a short duration so a crash hands
over within seconds), three real ``llmroute-sidecar --operator`` processes (two of them served by
the replica that does not lead, which forwards their usage), a fake OpenAI provider, and the official
``openai`` SDK sending requests throughout. The budget is ``failureMode: open``, so the policy allows
no refused request while the operator is unreachable. In turn, under that traffic:

1. the **leader is SIGKILLed** (no hand-over: it may die between writing spend and acknowledging it);
   the other replica takes the Lease when it expires and continues from the stored status;
2. the **kube-apiserver restarts** (down a few seconds; etcd keeps the data); the operators' watches
   and writes recover, and a route applied afterwards reaches every sidecar;
3. the provider **Secret is rotated**; every sidecar moves to the new key without a failed request;
4. a **sidecar restarts** (SIGTERM, as a rollout does; its app pauses while it is down): the stopping
   sidecar hands its usage over before it exits, and the new process continues.

After all four: no app request failed, every sidecar's usage is acknowledged, the budget's
``status.spent`` equals the sum of the ``x-llmroute-cost-usd`` of every answer to the micro-dollar
(nothing lost, nothing counted twice, across a crash), and the RSS of the processes that lived
through everything is back within a bound of where it started.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmroute_fakes.server import FakeProvider
from llmroute_operator.certs import make_dev_certificates
from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl
from tests.e2e.ha_support import leaders, operator_replicas, spread_sidecar
from tests.e2e.operator_process import OperatorProcess, status_of
from tests.e2e.push_support import SidecarProcess, poll
from tests.e2e.test_operator_core import apply_crds
from tests.e2e.test_operator_ha import Traffic, _route

LEASE = "llmroute-faults"
LEASE_SECONDS = 6  # a crashed leader hands over after this; the chart's default is 15
#: RSS a process that lived through every fault may have grown by, once traffic stopped and settled.
#: Measured around +3..8 MB on a 2-core machine (allocator high-water marks, warmed caches); a leak
#: of per-request state over these ~2,000 requests would show as far more.
RSS_GROWTH_MB = 25.0
FIGURES: dict[str, Any] = {}


def _resources(namespace: str, endpoint: str, key: str) -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: openai, namespace: {namespace}}}
stringData: {{apiKey: {key}}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {{name: team, namespace: {namespace}}}
spec:
  scope: {{routes: [chat]}}
  period: {{type: daily, timezone: UTC}}
  limits: {{hard: "100000"}}
  failureMode: open
---
{_route(namespace, "chat", endpoint)}
"""


def _secret(namespace: str, key: str) -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: openai, namespace: {namespace}}}
stringData: {{apiKey: {key}}}
"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Faults:
    cluster: target.Cluster
    kubectl: Kubectl
    namespace: str
    replicas: list[OperatorProcess]
    sidecars: list[SidecarProcess]
    provider: FakeProvider
    ca: Path
    workdir: Path

    def leaders(self) -> list[int]:
        return leaders(self.replicas)

    def sidecar(self, i: int, order: tuple[int, int]) -> SidecarProcess:
        name = f"app-{i}-{len(self.sidecars)}"  # a restarted sidecar is a new pod, as in a rollout
        return spread_sidecar(self.kubectl, self.namespace, name, self.replicas, order, ca=self.ca,
                              workdir=self.workdir)  # fmt: skip


@pytest.fixture(scope="module")
def faults(cluster: target.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    kubectl = cluster.kubectl
    apply_crds(kubectl)
    namespace = cluster.create_namespace("faults")
    workdir = tmp_path_factory.mktemp("faults")
    ca, cert, key = make_dev_certificates().write(workdir / "tls")
    for account in ("app", "llmroute-operator"):
        kubectl.run("create", "serviceaccount", account, "-n", namespace)
    provider = FakeProvider("openai")
    provider.start_in_thread()
    replicas = operator_replicas(
        cluster, namespace, workdir, (ca, cert, key), lease=LEASE,
        extra_args=("--leader-lease-seconds", str(LEASE_SECONDS)),
    )  # fmt: skip
    kubectl.run("apply", "-f", "-", input=_resources(namespace, provider.base_url, "sk-first"))
    state = Faults(cluster, kubectl, namespace, replicas, [], provider, ca, workdir)
    try:
        yield state
    finally:
        for sidecar in state.sidecars:
            sidecar.stop()
        for replica in replicas:
            if replica.stop() not in (0, None, -9):
                print(replica.tail())
        provider.stop_thread()
        print(f"\ncontrol-plane fault figures: {FIGURES}")
        cluster.delete_namespace(namespace)


def _restart(replica: OperatorProcess) -> None:
    """Start a stopped replica again on the same ports, as its Deployment would."""
    replica.start()
    replica.wait_ready()


def _traffic_resumed(traffic: list[Traffic], more: int, what: str) -> None:
    seen = sum(t.ok for t in traffic)
    poll(lambda: sum(t.ok for t in traffic) >= seen + more, timeout=60, interval=0.05, what=what)


def test_faults_under_load_fail_no_request_and_count_every_cent_once(faults: Faults) -> None:
    if faults.cluster.plane is None:
        pytest.fail(
            "the API server restart needs the local control plane (LLMROUTE_E2E=local)", pytrace=False
        )
    first, second = faults.replicas
    first.start()
    first.wait_ready()
    second.start()
    second.wait_ready()
    poll(lambda: faults.leaders() == [0], timeout=30, what="replica 0 leading")
    orders = [(0, 1), (1, 0), (1, 0)]  # two sidecars on the replica that does not lead
    faults.sidecars.extend(faults.sidecar(i, order).start() for i, order in enumerate(orders))
    poll(
        lambda: all(s.route_names() == ["chat"] for s in faults.sidecars), timeout=60, what="chat everywhere"
    )

    # One Traffic per sidecar: scenario 4 pauses one app while its sidecar restarts.
    traffic = [Traffic() for _ in faults.sidecars]
    threads = [
        threading.Thread(target=t.drive, args=(s,), daemon=True)
        for t, s in zip(traffic, faults.sidecars, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        _traffic_resumed(traffic, 90, "traffic flowing")
        lived: dict[str, OperatorProcess | SidecarProcess] = {
            "operator-1": second, "sidecar-1": faults.sidecars[1], "sidecar-2": faults.sidecars[2],
        }  # fmt: skip
        rss_before = {name: _rss_mb(p.process.pid) for name, p in lived.items() if p.process is not None}

        # 1. SIGKILL the leader.
        assert first.process is not None
        started = time.monotonic()
        first.process.kill()
        first.process.wait(timeout=10)
        poll(
            lambda: faults.leaders() == [1], timeout=LEASE_SECONDS * 4, interval=0.1, what="replica 1 leading"
        )
        FIGURES["1 leader SIGKILL: takeover s"] = round(time.monotonic() - started, 2)
        _traffic_resumed(traffic, 60, "traffic after the leader's SIGKILL")
        _restart(first)
        FIGURES["1 leader SIGKILL: requests so far"] = sum(t.ok for t in traffic)

        # 2. Restart the API server under load.
        down_started = time.monotonic()
        ready_s = faults.cluster.plane.restart_apiserver(down_seconds=3.0)
        FIGURES["2 API server restart: down+ready s"] = round(time.monotonic() - down_started, 2)
        FIGURES["2 API server restart: ready after start s"] = round(ready_s, 2)
        _traffic_resumed(traffic, 60, "traffic after the API server restart")
        poll(lambda: len(faults.leaders()) == 1, timeout=60, what="one leader after the API server restart")
        faults.kubectl.run(
            "apply", "-f", "-", input=_route(faults.namespace, "after-restart", faults.provider.base_url)
        )
        poll(
            lambda: all("after-restart" in s.route_names() for s in faults.sidecars),
            timeout=60,
            what="a route applied after the API server restart on every sidecar",
        )

        # 3. Rotate the provider key under load: within a bound, every request upstream carries the
        # new key (requests do not say which sidecar sent them, so: the last 60 in a row, which spans
        # every sidecar several times over), and none failed on the way.
        rotated = time.monotonic()
        faults.kubectl.run("apply", "-f", "-", input=_secret(faults.namespace, "sk-rotated"))

        def on_new_key() -> bool:
            last = faults.provider.requests[-60:]
            return len(last) == 60 and all(
                r.headers.get("authorization") == "Bearer sk-rotated" for r in last
            )

        poll(on_new_key, timeout=60, interval=0.1, what="only the rotated key upstream")
        FIGURES["3 Secret rotation: s until only the new key"] = round(time.monotonic() - rotated, 2)
        marked = len(faults.provider.requests)
        _traffic_resumed(traffic, 60, "traffic after the rotation")
        keys = {r.headers.get("authorization") for r in faults.provider.requests[marked:]}
        assert keys == {"Bearer sk-rotated"}, keys

        # 4. Restart a sidecar: its app pauses while it is down (it has no sidecar then).
        traffic[0].stop.set()
        threads[0].join(timeout=30)
        old = faults.sidecars[0]
        assert old.process is not None
        old.process.send_signal(signal.SIGTERM)
        assert old.process.wait(timeout=30) == 0, old.log.read_text()[-3000:]
        assert "not acknowledged" not in old.log.read_text()  # it handed every usage record over
        new = faults.sidecar(0, (0, 1))
        new.http_port, new.admin_port, new.grpc_port = old.http_port, old.admin_port, old.grpc_port
        faults.sidecars[0] = new.start()
        poll(lambda: "chat" in new.route_names(), timeout=60, what="the restarted sidecar configured")
        traffic.append(Traffic())
        threads.append(threading.Thread(target=traffic[-1].drive, args=(new,), daemon=True))
        threads[-1].start()
        _traffic_resumed(traffic, 60, "traffic after the sidecar restart")
    finally:
        for t in traffic:
            t.stop.set()
        for thread in threads:
            thread.join(timeout=30)

    failed = [f for t in traffic for f in t.failed]
    assert failed == [], failed[:5]
    poll(
        lambda: all(
            (s.config_dump().get("usage_unacked"), s.config_dump().get("usage_buffered")) == (0, 0)
            for s in faults.sidecars
        ),
        timeout=60,
        what="every sidecar's usage acknowledged",
    )
    answered = sum(t.cost_micro for t in traffic)
    spent = round(
        float(status_of(faults.kubectl, "llmbudgets", faults.namespace, "team")["spent"]) * 1_000_000
    )
    FIGURES.update(requests=sum(t.ok for t in traffic), answered_cost_micro=answered, spent_micro=spent)
    assert spent == answered

    time.sleep(3)  # settle: streams idle, garbage collected
    rss_after = {name: _rss_mb(p.process.pid) for name, p in lived.items() if p.process is not None}
    FIGURES["RSS MB before/after"] = {n: (round(rss_before[n], 1), round(rss_after[n], 1)) for n in rss_after}
    for name, after in rss_after.items():
        assert after - rss_before[name] <= RSS_GROWTH_MB, (name, rss_before[name], after)
