"""Certificate credentials: reading what an operator uploads (PEM or PFX) and making a
self-signed one (`manage.py generate_certificate`).

Entra ID accepts a certificate credential as a client assertion that MSAL signs with the
private key (Microsoft Learn, "Microsoft identity platform application authentication
certificate credentials"). The portal stores the private key encrypted like a secret and the
certificate itself (public) in clear, so its thumbprint, subject and expiry can be shown.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

# Entra ID takes RSA keys for certificate credentials; MSAL signs with RS256/PS256.
MIN_KEY_BITS = 2048
MAX_UPLOAD_BYTES = 64 * 1024
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_PEM_KEY = re.compile(
    rb"-----BEGIN (?:RSA |ENCRYPTED |EC )?PRIVATE KEY-----.+?"
    rb"-----END (?:RSA |ENCRYPTED |EC )?PRIVATE KEY-----",
    re.S,
)


class CertificateError(Exception):
    """The uploaded certificate cannot be used (message is for the operator)."""


@dataclass(frozen=True)
class CertificateCredential:
    """A certificate and its private key, as the credential store keeps them."""

    private_key_pem: str  # PKCS #8, unencrypted: encrypt it before storing
    certificate_pem: str
    thumbprint: str  # SHA-1, upper-case hex: what Entra ID shows as "Thumbprint"
    subject: str
    not_before: datetime
    not_after: datetime


def _thumbprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Entra's id


def describe(certificate_pem: str) -> tuple[str, str, datetime]:
    """(thumbprint, subject, expiry) of a PEM certificate."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    return (
        _thumbprint(certificate),
        certificate.subject.rfc4514_string(),
        certificate.not_valid_after_utc,
    )


def _load_pem(data: bytes, password: bytes | None) -> tuple[object, list[x509.Certificate]]:
    certificates = [x509.load_pem_x509_certificate(block) for block in _PEM_CERT.findall(data)]
    keys = _PEM_KEY.findall(data)
    if not certificates:
        raise CertificateError(
            "The PEM file holds no certificate (-----BEGIN CERTIFICATE-----): upload the "
            "private key and the certificate together, or a PFX file."
        )
    if not keys:
        raise CertificateError(
            "The file holds a certificate but not its private key: upload the private key "
            "and the certificate together (PEM), or a PFX file with the key."
        )
    try:
        key = serialization.load_pem_private_key(keys[0], password or None)
    except TypeError:
        if password:
            raise CertificateError(
                "The private key is not encrypted: leave the password empty."
            ) from None
        raise CertificateError("The private key is encrypted: give its password.") from None
    except ValueError:
        raise CertificateError(
            "The private key cannot be read: the password is wrong or the key is damaged."
        ) from None
    return key, certificates


def _load_pfx(data: bytes, password: bytes | None) -> tuple[object, list[x509.Certificate]]:
    try:
        key, certificate, extra = pkcs12.load_key_and_certificates(data, password or None)
    except ValueError:
        raise CertificateError(
            "The file cannot be opened as PFX (PKCS #12) or PEM: the password is wrong or "
            "the file is not a certificate."
        ) from None
    if certificate is None:
        raise CertificateError("The PFX file holds no certificate.")
    if key is None:
        raise CertificateError(
            "The PFX file holds a certificate but not its private key: export it with the key."
        )
    return key, [certificate, *extra]


def load(data: bytes, password: str = "", *, now: datetime | None = None) -> CertificateCredential:
    """Read a PEM (key + certificate) or PFX upload. Raises CertificateError, naming the
    problem: unreadable, wrong password, no key, a key of another certificate, expired."""
    if not data or not data.strip():
        raise CertificateError("The certificate file is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise CertificateError("The file is too large to be a certificate and its key.")
    secret = password.encode("utf-8") if password else None
    try:
        if b"-----BEGIN" in data:
            key, certificates = _load_pem(data, secret)
        else:
            key, certificates = _load_pfx(data, secret)
    except CertificateError:
        raise
    except (ValueError, TypeError):
        raise CertificateError("The certificate cannot be read (damaged PEM or PFX).") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateError("The private key is not an RSA key: Entra ID needs RSA.")
    if key.key_size < MIN_KEY_BITS:
        raise CertificateError(f"The RSA key has {key.key_size} bits; use {MIN_KEY_BITS} or more.")
    public = key.public_key().public_numbers()
    certificate = next(
        (
            c
            for c in certificates
            if isinstance(c.public_key(), rsa.RSAPublicKey)
            and c.public_key().public_numbers() == public  # type: ignore[union-attr]
        ),
        None,
    )
    if certificate is None:
        raise CertificateError("The private key does not belong to the certificate in the file.")
    now = now or datetime.now(UTC)
    if certificate.not_valid_after_utc <= now:
        raise CertificateError(
            f"The certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC."
        )
    if certificate.not_valid_before_utc > now + timedelta(minutes=5):
        raise CertificateError(
            f"The certificate is valid only from "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC."
        )
    return CertificateCredential(
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        thumbprint=_thumbprint(certificate),
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def generate(common_name: str, days: int) -> tuple[str, str]:
    """A new RSA key and a self-signed certificate for it: (key PEM, certificate PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=MIN_KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def fingerprint(certificate_pem: str) -> str:
    """The credential store's short id for a certificate: a SHA-256 prefix of its DER."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    der = certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()[:12]
