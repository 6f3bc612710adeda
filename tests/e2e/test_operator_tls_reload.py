"""Serving certificate rotation without a restart, end to end: a real kube-apiserver, ``llmroute-operator``
(not ``--dev``: ``--tls-cert/--tls-key/--tls-ca`` from a folder laid out like a mounted Secret) as a
child process, and a raw config stream of a Pod whose token TokenReview vouches for.

While that stream stays open the files rotate: to a new certificate of the same CA (atomic ``..data``
swap, as the kubelet writes), to a half-written pair (a new certificate beside the old key), and to a
new CA. Each time the test reads the serial that a *new* TLS handshake presents, on the config server
and on the webhook server, and shows that the open stream still receives config pushes. Figures are
printed (run with ``-s``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from llmroute_operator.devcluster import target
from llmroute_operator.devcluster.kubectl import Kubectl, KubectlError
from llmroute_proto.v1 import discovery_pb2 as dpb
from tests.tls_support import Authority, SecretVolume, served_serial

from .operator_process import OperatorProcess, wait_for
from .push_support import RawClient, chat_route, make_pod
from .stream_support import ConfigStream
from .test_operator_core import apply_crds

pytestmark = pytest.mark.e2e

FIGURES: dict[str, Any] = {}


def install_crds(kubectl: Kubectl) -> None:
    """``apply_crds``, again while ``kubectl wait`` races a CRD that has no status yet."""
    for attempt in range(5):
        try:
            apply_crds(kubectl)
            return
        except KubectlError:
            if attempt == 4:
                raise
            time.sleep(0.5)


@dataclass
class Rig:
    kubectl: Kubectl
    namespace: str
    operator: OperatorProcess
    volume: SecretVolume
    ca: Authority
    token: str

    def serials(self) -> tuple[int, int]:
        """What a new handshake presents: (config server, webhook server)."""
        return (
            served_serial(self.operator.config_port, alpn=("h2",)),
            served_serial(self.operator.webhook_port),
        )

    def push(self, model: str) -> None:
        self.kubectl.run("apply", "-f", "-", input=chat_route(self.namespace, model))


@pytest.fixture(scope="module")
def rig(cluster: target.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    kubectl = cluster.kubectl
    install_crds(kubectl)
    namespace = cluster.create_namespace("tls")
    kubectl.run("create", "serviceaccount", "app", "-n", namespace)
    workdir = tmp_path_factory.mktemp("tls")
    ca = Authority.new("llmroute-ca-1")
    first = ca.issue()
    volume = SecretVolume(workdir / "llmroute-tls")
    volume.publish({"tls.crt": first.cert_pem, "tls.key": first.key_pem, "ca.crt": ca.ca_pem})
    args = [
        "--standalone", "--namespace", namespace,
        "--tls-cert", str(volume.path("tls.crt")), "--tls-key", str(volume.path("tls.key")),
        "--tls-ca", str(volume.path("ca.crt")), "--tls-reload-interval", "0.3",
    ]  # fmt: skip
    operator = OperatorProcess(cluster.kubeconfig, workdir / "operator.log", args)
    token = make_pod(kubectl, namespace, "chat-0", {"app": "chat"})
    try:
        operator.start()
        operator.wait_ready()
        yield Rig(kubectl, namespace, operator, volume, ca, token)
    finally:
        if operator.stop() not in (0, None):
            print(operator.tail())
        print(f"\nTLS reload figures: {FIGURES}")
        cluster.delete_namespace(namespace)


def _reloads(rig: Rig, result: str) -> float:
    return rig.operator.metric(f'llmroute_operator_tls_reloads_total{{result="{result}"}}') or 0.0


def test_rotation_keeps_open_streams_and_new_handshakes_get_the_new_certificate(rig: Rig) -> None:
    first_serial = rig.serials()
    rig.push("gpt-4o")
    stream = ConfigStream(rig.operator.config_port, rig.ca.ca_pem, rig.token, dpb.Node(id="chat-0-a"))
    try:
        version = stream.until_model("gpt-4o").version_info

        # 1. A new certificate of the same CA, swapped in atomically.
        second = rig.ca.issue()
        started = time.monotonic()
        rig.volume.publish({"tls.crt": second.cert_pem, "tls.key": second.key_pem, "ca.crt": rig.ca.ca_pem})
        wait_for(lambda: rig.serials() == (second.serial, second.serial), what="the new serial served")
        FIGURES["same_ca_reload_s"] = round(time.monotonic() - started, 2)
        assert f"reloaded TLS certificate (serial {second.serial:x}" in rig.operator.tail(20000)
        assert _reloads(rig, "ok") == 1
        expiry = rig.operator.metric("llmroute_operator_tls_certificate_expiry_timestamp_seconds")
        assert expiry is not None and abs(expiry - (time.time() + 30 * 86400)) < 3 * 3600
        rig.push("gpt-4o-mini")
        pushed = stream.until_model("gpt-4o-mini")  # the stream opened before the rotation is served
        assert pushed.version_info != version
        # A new client that trusts the CA connects and is served.
        client = RawClient(rig.operator.config_port, rig.volume.path("ca.crt"), rig.token)
        try:
            assert client.first_config(dpb.Node(id="chat-0-b")).version_info == pushed.version_info
        finally:
            client.close()

        # 2. A half-written pair: the certificate changed, the key not yet. The old pair keeps serving.
        third = rig.ca.issue()
        rig.volume.overwrite("tls.crt", third.cert_pem)
        wait_for(lambda: _reloads(rig, "error") == 1, what="the bad pair refused")
        time.sleep(1.0)  # a few more polls of the same bad pair: still one warning, still the old pair
        assert rig.serials() == (second.serial, second.serial)
        log = rig.operator.tail(20000)
        assert log.count("not reloading the TLS certificate") == 1 and "does not belong" in log
        assert "PRIVATE KEY" not in log
        rig.push("gpt-4o")
        stream.until_model("gpt-4o")
        rig.volume.overwrite("tls.key", third.key_pem)  # the writer finishes
        wait_for(lambda: rig.serials() == (third.serial, third.serial), what="the completed pair served")

        # 3. A new CA (certificate, key and CA file in one swap).
        new_ca = Authority.new("llmroute-ca-2")
        fourth = new_ca.issue()
        rig.volume.publish({"tls.crt": fourth.cert_pem, "tls.key": fourth.key_pem, "ca.crt": new_ca.ca_pem})
        wait_for(lambda: rig.serials() == (fourth.serial, fourth.serial), what="the new CA's certificate")
        rig.push("gpt-4o-mini")
        stream.until_model("gpt-4o-mini")
        fresh = RawClient(rig.operator.config_port, rig.volume.path("ca.crt"), rig.token)
        try:
            assert fresh.first_config(dpb.Node(id="chat-0-c")).version_info
        finally:
            fresh.close()
        stale = ConfigStream(rig.operator.config_port, rig.ca.ca_pem, rig.token, dpb.Node(id="chat-0-d"))
        try:
            with pytest.raises(grpc.RpcError) as refused:
                stale.next(timeout=15)  # a client of the old CA cannot verify the new certificate
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        finally:
            stale.close()
        assert _reloads(rig, "ok") == 3 and _reloads(rig, "error") == 1
        FIGURES["serials"] = {
            "start": f"{first_serial[0]:x}",
            "same_ca": f"{second.serial:x}",
            "half_written_refused_then_completed": f"{third.serial:x}",
            "new_ca": f"{fourth.serial:x}",
        }
        FIGURES["pushes_on_the_stream_opened_first"] = stream.received
        assert rig.operator.alive()
    finally:
        stream.close()
