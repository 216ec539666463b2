"""A certificate authority for one deployment and the certificates it issues.

``init_ca`` writes ``ca.crt`` and ``ca.key``; ``issue`` writes ``NAME.crt`` and ``NAME.key``
signed by it. The subject's common name is NAME (a device's worker name), its organisational
unit the role (``mcdask device``, ``mcdask client``, ``mcdask scheduler``): the scheduler's gate
(``mcdask.security.gate``) admits a worker only if its certificate is a device's and names it.
Keys are ECDSA P-256 (cheap to sign and verify on a Pi, which has no AES instructions either
way); key files are readable by their owner only.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Literal

from mcdask.errors import TLSError

Role = Literal["device", "client", "scheduler"]
ROLES: tuple[Role, ...] = ("device", "client", "scheduler")
CA_CERT, CA_KEY = "ca.crt", "ca.key"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def role_unit(role: str) -> str:
    """The organisational unit that carries ``role`` in a certificate's subject."""
    return f"mcdask {role}"


def init_ca(directory: Path, *, days: int = 3650, force: bool = False) -> tuple[Path, Path]:
    """A new CA in ``directory``: (ca.crt, ca.key). An existing CA is kept unless ``force``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not force and (cert_path.exists() or key_path.exists()):
        raise TLSError(f"{directory} already holds a CA ({CA_CERT}, {CA_KEY}); keep it, or pass --force to "
                       "replace it (every certificate it issued stops working)")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _subject("mcdask CA", "ca")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, _cert_pem(cert))
    return cert_path, key_path


def issue(directory: Path, name: str, role: Role = "device", *, days: int = 825) -> tuple[Path, Path]:
    """A certificate for ``name`` in ``role``, signed by the CA in ``directory``:
    (NAME.crt, NAME.key). Devices and the scheduler both listen and connect (server and client
    use); a client only connects."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not _NAME.match(name):
        raise TLSError(f"certificate name {name!r}: use letters, digits, '.', '_' and '-' (a device's worker "
                       "name, e.g. pi3-00), at most 64 characters")
    if role not in ROLES:
        raise TLSError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    ca_cert, ca_key = load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([] if role == "client" else [ExtendedKeyUsageOID.SERVER_AUTH])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_subject(name, role)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, _cert_pem(cert))
    return cert_path, key_path


def load_ca(directory: Path):
    """The CA's (certificate, private key) from ``directory``; one clear error if there is none."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not (cert_path.is_file() and key_path.is_file()):
        raise TLSError(f"no CA in {directory} ({CA_CERT} and {CA_KEY}); run `mcdask certs init --dir {directory}`")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as e:
        raise TLSError(f"the CA in {directory} cannot be read ({e})") from None
    return cert, key


def identity(peercert: dict | None) -> tuple[str | None, str | None]:
    """(common name, role) from a verified peer certificate as Python's ``ssl`` gives it
    (``SSLSocket.getpeercert()``); (None, None) without one."""
    fields = dict(item for rdn in (peercert or {}).get("subject", ()) for item in rdn)
    unit = fields.get("organizationalUnitName", "")
    role = unit.removeprefix("mcdask ") if unit.startswith("mcdask ") else None
    return fields.get("commonName"), role


def _subject(name: str, role: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mcdask"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role_unit(role)),
                      x509.NameAttribute(NameOID.COMMON_NAME, name)])


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write ``path`` (mode 0600 for a private key, from its creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    if private:
        os.chmod(path, 0o600)
