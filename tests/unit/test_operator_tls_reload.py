"""``tls_reload``: which file sets count as a consistent certificate, and what the watcher does with
half-written or broken ones (keeps the old, warns once) and with good ones (hands them on once)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from llmroute_operator.app import _CaConfigMaps
from llmroute_operator.configserver.forward import LeaderLink
from llmroute_operator.tls_reload import (
    ReloadableSslContext,
    TlsError,
    TlsFiles,
    TlsMaterial,
    TlsWatcher,
    load_material,
)
from tests.tls_support import Authority, SecretVolume


class Observer:
    def __init__(self) -> None:
        self.results: list[str] = []
        self.expiry: list[float] = []

    def tls_reloaded(self, result: str) -> None:
        self.results.append(result)

    def tls_serving(self, not_after: object) -> None:
        self.expiry.append(not_after.timestamp())  # type: ignore[attr-defined]


def test_a_consistent_set_loads_with_serial_and_expiry() -> None:
    ca = Authority.new()
    issued = ca.issue(days=7)
    material = load_material(issued.cert_pem, issued.key_pem, ca.ca_pem)
    assert material.serial == issued.serial
    assert f"serial {issued.serial:x}" in material.describe()
    assert "PRIVATE" not in repr(material) and "not after" in repr(material)
    assert load_material(issued.cert_pem, issued.key_pem, None).ca_pem is None


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("foreign key", "does not belong"),
        ("other ca", "not issued by a CA"),
        ("no cert", "no PEM certificate"),
        ("no key", "no unencrypted PEM private key"),
        ("bad ca", "CA file holds no PEM"),
    ],
)
def test_inconsistent_sets_are_refused(case: str, message: str) -> None:
    ca, other = Authority.new(), Authority.new("other")
    one, two = ca.issue(), ca.issue()
    cert, key, bundle = one.cert_pem, one.key_pem, ca.ca_pem
    if case == "foreign key":
        key = two.key_pem
    elif case == "other ca":
        bundle = other.ca_pem
    elif case == "no cert":
        cert = b""
    elif case == "no key":
        key = one.cert_pem
    elif case == "bad ca":
        bundle = b"-----BEGIN CERTIFICATE-----\nnope\n"
    with pytest.raises(TlsError, match=message) as caught:
        load_material(cert, key, bundle)
    assert "PRIVATE KEY" not in str(caught.value)


def test_a_bundle_with_the_old_and_the_new_ca_accepts_either() -> None:
    old, new = Authority.new("old"), Authority.new("new")
    bundle = old.ca_pem + new.ca_pem
    for ca in (old, new):
        issued = ca.issue()
        assert load_material(issued.cert_pem, issued.key_pem, bundle).serial == issued.serial


def _volume(tmp_path: Path, ca: Authority) -> tuple[SecretVolume, TlsMaterial]:
    volume = SecretVolume(tmp_path / "secret")
    first = ca.issue()
    volume.publish({"tls.crt": first.cert_pem, "tls.key": first.key_pem, "ca.crt": ca.ca_pem})
    return volume, load_material(first.cert_pem, first.key_pem, ca.ca_pem)


def _watcher(volume: SecretVolume, current: TlsMaterial, observer: Observer) -> TlsWatcher:
    files = TlsFiles(volume.path("tls.crt"), volume.path("tls.key"), volume.path("ca.crt"))
    return TlsWatcher(files=files, current=current, interval=0.01, observer=observer)


def test_the_watcher_hands_on_a_rotation_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = Authority.new()
    volume, first = _volume(tmp_path, ca)
    observer = Observer()
    watcher = _watcher(volume, first, observer)
    seen: list[int] = []
    watcher.on_change(lambda material: seen.append(material.serial))
    assert watcher.poll() is None  # unchanged
    second = ca.issue()
    volume.publish({"tls.crt": second.cert_pem, "tls.key": second.key_pem, "ca.crt": ca.ca_pem})
    with caplog.at_level(logging.INFO, logger="llmroute_operator.tls_reload"):
        reloaded = watcher.poll()
        assert watcher.poll() is None
    assert reloaded is not None and reloaded.serial == second.serial == watcher.current.serial
    assert seen == [second.serial]
    assert observer.results == ["ok"] and len(observer.expiry) == 2
    assert [r.getMessage() for r in caplog.records] == [f"reloaded TLS certificate ({reloaded.describe()})"]


def test_a_half_written_pair_keeps_the_old_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = Authority.new()
    volume, first = _volume(tmp_path, ca)
    observer = Observer()
    watcher = _watcher(volume, first, observer)
    seen: list[int] = []
    watcher.on_change(lambda material: seen.append(material.serial))
    second = ca.issue()
    volume.overwrite("tls.crt", second.cert_pem)  # the key has not followed yet
    with caplog.at_level(logging.WARNING, logger="llmroute_operator.tls_reload"):
        for _ in range(3):
            assert watcher.poll() is None
    assert watcher.current == first and seen == []
    assert observer.results == ["error"]
    [warning] = caplog.records
    assert "still serving" in warning.getMessage() and "does not belong" in warning.getMessage()
    assert "PRIVATE KEY" not in warning.getMessage()
    volume.overwrite("tls.key", second.key_pem)  # now it has
    assert watcher.poll() is not None and seen == [second.serial]
    assert observer.results == ["error", "ok"]


def test_a_new_ca_must_arrive_with_its_certificate(tmp_path: Path) -> None:
    ca, new_ca = Authority.new(), Authority.new("new")
    volume, first = _volume(tmp_path, ca)
    watcher = _watcher(volume, first, Observer())
    moved = new_ca.issue()
    volume.overwrite("tls.crt", moved.cert_pem)
    volume.overwrite("tls.key", moved.key_pem)
    assert watcher.poll() is None  # the CA file still names the old CA
    volume.overwrite("ca.crt", new_ca.ca_pem)
    reloaded = watcher.poll()
    assert reloaded is not None and reloaded.ca_pem == new_ca.ca_pem


def test_a_missing_file_is_not_fatal(tmp_path: Path) -> None:
    ca = Authority.new()
    volume, first = _volume(tmp_path, ca)
    observer = Observer()
    watcher = _watcher(volume, first, observer)
    volume.path("tls.key").unlink()
    assert watcher.poll() is None and watcher.poll() is None
    assert observer.results == ["error"]


def test_the_extra_check_can_veto(tmp_path: Path) -> None:
    ca = Authority.new()
    volume, first = _volume(tmp_path, ca)

    def veto(material: TlsMaterial) -> None:
        raise TlsError("OpenSSL refuses the pair: test")

    files = TlsFiles(volume.path("tls.crt"), volume.path("tls.key"), volume.path("ca.crt"))
    watcher = TlsWatcher(files=files, current=first, check=veto)
    second = ca.issue()
    volume.publish({"tls.crt": second.cert_pem, "tls.key": second.key_pem, "ca.crt": ca.ca_pem})
    assert watcher.poll() is None and watcher.current == first


def test_the_ssl_context_is_reloaded_in_place(tmp_path: Path) -> None:
    ca = Authority.new()
    one, two = ca.issue(), ca.issue()
    first = load_material(one.cert_pem, one.key_pem, None)
    holder = ReloadableSslContext(first, directory=tmp_path / "ctx")
    context = holder.context
    holder.apply(load_material(two.cert_pem, two.key_pem, None))
    assert holder.context is context  # the listening socket keeps this object
    # A pair OpenSSL refuses (built past load_material's checks) is refused before the live context.
    broken = TlsMaterial(
        cert_pem=one.cert_pem, key_pem=two.key_pem, ca_pem=None, serial=one.serial, not_after=first.not_after
    )
    with pytest.raises(TlsError, match="OpenSSL refuses"):
        holder.apply(broken)
    assert (tmp_path / "ctx" / "tls.key").stat().st_mode & 0o077 == 0


class _Follower:
    identity = "replica-2"
    leader = False
    leader_address = "127.0.0.1:1"


async def test_the_peer_link_uses_a_new_channel_after_a_ca_change() -> None:
    old, new = Authority.new("old"), Authority.new("new")
    link = LeaderLink(leadership=_Follower(), ca_pem=old.ca_pem, server_name="localhost")
    try:
        first = link.channel()
        assert link.channel() is first
        link.update_ca(old.ca_pem)  # the same CA: nothing to do
        assert link.channel() is first
        link.update_ca(new.ca_pem)
        second = link.channel()
        assert second is not first and link.channel() is second
    finally:
        await link.close()


class _ConfigMaps:
    def __init__(self) -> None:
        self.written: list[tuple[str, str]] = []

    async def ensure_configmap(self, namespace: str, name: str, data: dict[str, str], **_: object) -> bool:
        self.written.append((namespace, data["ca.crt"]))
        return True


async def test_a_new_ca_is_republished_to_the_namespaces_that_have_the_old() -> None:
    kube = _ConfigMaps()
    publisher = _CaConfigMaps(kube=kube, ca_pem="old")  # type: ignore[arg-type]
    await publisher.ensure("team-a")
    await publisher.ensure("team-b")
    publisher.update(b"old")  # unchanged: nothing to do
    publisher.update(b"new")
    for _ in range(20):
        await asyncio.sleep(0)
    assert kube.written == [("team-a", "old"), ("team-b", "old"), ("team-a", "new"), ("team-b", "new")]
    await publisher.ensure("team-c")
    assert kube.written[-1] == ("team-c", "new")
