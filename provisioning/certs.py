"""Optional client certificates: a fleet CA and one certificate per camera (``cryptography``).

Keys are ECDSA P-256 (small, fast on a Pi, accepted by Mosquitto/OpenSSL). The CA is valid 20
years, camera certificates 10 years: a camera in a ceiling is not re-flashed for a renewal, and
the broker still checks the camera's password, so a certificate alone grants nothing. Like the
passwords, keys and certificates are made once and reused; nothing here rotates them.

``cryptography`` is imported lazily: only fleets with ``broker.client_certificates = true`` need it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.errors import UsageError
from provisioning.credentials import SecretStore, read_private, write_private

CA_DAYS = 20 * 365
CLIENT_DAYS = 10 * 365


@dataclass(frozen=True)
class ClientCert:
    cert_pem: bytes
    key_pem: bytes
    cert_path: Path
    key_path: Path
    created: bool


def _crypto() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise UsageError(
            "client certificates need the 'cryptography' package, which is not installed",
            hint="pip install cryptography, or set broker.client_certificates = false",
        ) from None
    return x509, hashes, serialization, ec, NameOID, ExtendedKeyUsageOID


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def ensure_ca(store: SecretStore, fleet: str) -> tuple[bytes, bytes, bool]:
    """The fleet CA (cert PEM, key PEM, created); made on first use."""
    x509, hashes, serialization, ec, name_oid, _ = _crypto()
    folder = store.ca_dir()
    cert_path, key_path = folder / "fleet-ca.crt", folder / "fleet-ca.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path.read_bytes(), read_private(key_path), False
    store.private_folder(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, f"anoncam fleet CA {fleet}")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    write_private(key_path, key_pem)
    write_private(cert_path, cert_pem)
    return cert_pem, key_pem, True


def ensure_client(store: SecretStore, folder: Path, username: str, fleet: str) -> ClientCert:
    """The camera's client key and certificate (CN = its MQTT user name); made on first use."""
    x509, hashes, serialization, ec, name_oid, eku = _crypto()
    cert_path, key_path = folder / "mqtt-client.crt", folder / "mqtt-client.key"
    if cert_path.is_file() and key_path.is_file():
        return ClientCert(
            cert_path.read_bytes(), read_private(key_path), cert_path, key_path, False
        )
    ca_pem, ca_key_pem, _ = ensure_ca(store, fleet)
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    store.private_folder(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, username)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=CLIENT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    write_private(key_path, key_pem)
    write_private(cert_path, cert_pem)
    return ClientCert(cert_pem, key_pem, cert_path, key_path, True)
