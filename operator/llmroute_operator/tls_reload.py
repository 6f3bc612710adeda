"""The operator's serving certificate, watched on disk and reloaded when it changes.

In a cluster ``--tls-cert/--tls-key/--tls-ca`` are files of a mounted Secret (``llmroute-tls``) that
Helm or cert-manager rotate. The kubelet updates such a volume by writing a new ``..data_tmp``
directory and swapping the ``..data`` symlink, so the files change at once but without reliable
mtimes or file events; and a reader that opens the three files one after the other may still see a
cert of the new pair with a key of the old one. So :class:`TlsWatcher` re-reads the files every few
seconds (content hash, as kopf's own webhook server does), and a change is taken only once the set
is *consistent*: the key belongs to the certificate, OpenSSL loads the pair, and (with a CA file) the
certificate is issued by that CA. Until then the old material keeps serving and one warning says why.

Pure parts: :func:`load_material` (parse and check PEM bytes) and :class:`TlsMaterial`. The I/O parts
are the watcher and :class:`ReloadableSslContext` (the webhook server's ``ssl.SSLContext``, loaded again
in place). Its neighbours: ``app.py`` wires a change to the config server
(``configserver/server.py``: new handshakes get the new certificate, open streams stay up), the peer
link (``configserver/forward.py``: new calls verify the leader with the new CA) and the webhook server;
``metrics.py`` counts reloads and shows the serving certificate's expiry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

__all__ = [
    "ReloadableSslContext",
    "TlsError",
    "TlsFiles",
    "TlsMaterial",
    "TlsObserver",
    "TlsWatcher",
    "load_material",
]

log = logging.getLogger(__name__)

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class TlsError(ValueError):
    """The files do not (yet) make a usable certificate, key and CA."""


@dataclass(frozen=True)
class TlsMaterial:
    """A checked serving certificate chain, its key and the CA bundle (PEM), with what logs show."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None
    serial: int
    not_after: dt.datetime

    def describe(self) -> str:
        return f"serial {self.serial:x}, not after {self.not_after.isoformat()}"

    def __repr__(self) -> str:  # never the key, not even in a traceback
        return f"TlsMaterial({self.describe()})"


@dataclass(frozen=True)
class TlsFiles:
    """Where the material lives (the mounted Secret's paths)."""

    cert: Path
    key: Path
    ca: Path | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        ca = self.ca.read_bytes() if self.ca is not None else None
        return self.cert.read_bytes(), self.key.read_bytes(), ca


def load_material(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None) -> TlsMaterial:
    """Parse and cross-check PEM bytes; :class:`TlsError` says what does not fit (never the key)."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TlsError(f"the certificate file holds no PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsError("the key file holds no unencrypted PEM private key") from None
    leaf = chain[0]
    if leaf.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise TlsError(f"the key does not belong to the certificate (serial {leaf.serial_number:x})")
    if ca_pem is not None:
        try:
            authorities = x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise TlsError(f"the CA file holds no PEM certificate ({exc})") from None
        if not _issued_by_any(chain, authorities):
            raise TlsError(
                f"the certificate (serial {leaf.serial_number:x}) is not issued by a CA of the CA file"
            )
    return TlsMaterial(
        cert_pem=cert_pem,
        key_pem=key_pem,
        ca_pem=ca_pem,
        serial=leaf.serial_number,
        not_after=leaf.not_valid_after_utc,
    )


def _issued_by_any(chain: list[x509.Certificate], authorities: list[x509.Certificate]) -> bool:
    """Some certificate of the chain is one of the CAs or directly signed by one (intermediates ok)."""
    for cert in chain:
        for authority in authorities:
            if cert == authority:
                return True
            if cert.issuer != authority.subject:
                continue
            try:
                cert.verify_directly_issued_by(authority)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
    return False


def _digest(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None) -> str:
    hasher = hashlib.sha256()
    for part in (cert_pem, key_pem, ca_pem or b""):
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def _write_private(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``directory/name`` (0600) by rename, so a reader never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path = directory / name
    os.replace(tmp, path)
    return path


class ReloadableSslContext:
    """One server ``SSLContext`` whose certificate is replaced in place.

    A listening socket keeps the context it was created with, so the webhook server (kopf, aiohttp)
    gets this one object; :meth:`apply` loads the new pair into it, and OpenSSL copies the context's
    certificate into each new connection, so connections already open keep theirs. The pair is first
    loaded into a scratch context: a failed ``load_cert_chain`` on the live one could leave it with
    the new certificate and no key. ``load_cert_chain`` only reads files, hence the private copies in
    ``directory``.
    """

    def __init__(self, material: TlsMaterial, *, directory: Path) -> None:
        self._directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        self.apply(material)

    def check(self, material: TlsMaterial) -> None:
        """Raise :class:`TlsError` if OpenSSL will not load the pair."""
        self._load(ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH), material)

    def apply(self, material: TlsMaterial) -> None:
        self.check(material)
        self._load(self.context, material)

    def _load(self, context: ssl.SSLContext, material: TlsMaterial) -> None:
        cert = _write_private(self._directory, "tls.crt", material.cert_pem)
        key = _write_private(self._directory, "tls.key", material.key_pem)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise TlsError(f"OpenSSL refuses the pair: {exc.reason or exc}") from None


class TlsObserver(Protocol):
    """Metrics hooks (``metrics.OperatorMetrics`` implements them)."""

    def tls_reloaded(self, result: str) -> None: ...
    def tls_serving(self, not_after: dt.datetime) -> None: ...


class _NoObserver:
    def tls_reloaded(self, result: str) -> None:
        pass

    def tls_serving(self, not_after: dt.datetime) -> None:
        pass


Listener = Callable[[TlsMaterial], None]


class TlsWatcher:
    """Polls :class:`TlsFiles`; hands each new consistent :class:`TlsMaterial` to the listeners."""

    def __init__(
        self,
        *,
        files: TlsFiles,
        current: TlsMaterial,
        interval: float = 5.0,
        check: Callable[[TlsMaterial], None] | None = None,
        observer: TlsObserver | None = None,
    ) -> None:
        self.files = files
        self.current = current
        self.interval = interval
        self._check = check  # an extra gate, e.g. ReloadableSslContext.check (OpenSSL loads it)
        self._observer: TlsObserver = observer or _NoObserver()
        self._listeners: list[Listener] = []
        self._digest = _digest(current.cert_pem, current.key_pem, current.ca_pem)
        self._refused = ""  # digest of the last inconsistent set, warned about once
        self._observer.tls_serving(current.not_after)

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def poll(self) -> TlsMaterial | None:
        """Read the files once; the new material if it changed and is consistent, else None."""
        try:
            cert_pem, key_pem, ca_pem = self.files.read()
        except OSError as exc:  # a file missing mid-swap: try again next time
            self._refuse(f"unreadable:{exc}", f"cannot read the TLS files: {exc}")
            return None
        digest = _digest(cert_pem, key_pem, ca_pem)
        if digest == self._digest:
            return None
        try:
            material = load_material(cert_pem, key_pem, ca_pem)
            if self._check is not None:
                self._check(material)
        except TlsError as exc:
            self._refuse(digest, str(exc))
            return None
        self._digest, self._refused = digest, ""
        self.current = material
        log.info("reloaded TLS certificate (%s)", material.describe())
        for listener in self._listeners:
            try:
                listener(material)
            except Exception:
                log.exception("applying the reloaded TLS certificate failed")
        self._observer.tls_reloaded("ok")
        self._observer.tls_serving(material.not_after)
        return material

    def _refuse(self, digest: str, reason: str) -> None:
        if digest == self._refused:
            return  # still the same half-written or broken set: warned already
        self._refused = digest
        log.warning(
            "not reloading the TLS certificate, still serving %s: %s", self.current.describe(), reason
        )
        self._observer.tls_reloaded("error")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.poll()
            except Exception:
                log.exception("checking the TLS files failed")
