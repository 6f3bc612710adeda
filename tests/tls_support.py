"""Certificates for the TLS reload tests: a CA that can issue more than one serving certificate, and a
folder laid out and updated the way the kubelet updates a mounted Secret.

``llmroute_operator.certs`` makes one CA and one certificate and forgets the CA's key; rotating "to a
new certificate of the same CA" needs the key, hence this. EC P-256, as ``certs.py``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes
    serial: int


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, name: str = "llmroute-test-ca") -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def ca_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, *, days: int = 30) -> Issued:
        """A serving certificate for localhost / 127.0.0.1 with a fresh key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial)


class SecretVolume:
    """A folder like a mounted Secret: ``tls.crt`` -> ``..data/tls.crt``, ``..data`` -> a timestamped
    folder; :meth:`publish` writes a new folder and swaps ``..data`` with one rename, as the kubelet's
    atomic writer does."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._generation = 0

    def path(self, name: str) -> Path:
        return self.directory / name

    def publish(self, files: dict[str, bytes]) -> None:
        self._generation += 1
        target = self.directory / f"..{self._generation:04d}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        link = self.directory / "..data_tmp"
        link.symlink_to(target.name)
        os.replace(link, self.directory / "..data")
        for name in files:
            visible = self.directory / name
            if not visible.is_symlink():
                visible.symlink_to(f"..data/{name}")

    def overwrite(self, name: str, data: bytes) -> None:
        """A non-atomic writer (a script, a hostPath): one file changes, the others not yet."""
        real = (self.directory / name).resolve()
        real.write_bytes(data)


def served_serial(port: int, *, host: str = "127.0.0.1", alpn: tuple[str, ...] = ()) -> int:
    """The serial of the certificate a TLS server on ``port`` presents (no verification)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
