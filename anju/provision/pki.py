"""The city's private certificate authority, and the server and client certificates it signs
(EC P-256 keys, SHA-256 signatures, PEM files). Uses ``cryptography``."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from anju.errors import ConfigError
from anju.provision.files import write_private, write_public

CA_DAYS = 3650
LEAF_DAYS = 825  # what browsers and most TLS stacks accept for a leaf
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True, slots=True)
class CertAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_or_create_ca(cert_path: Path, key_path: Path, *, org: str) -> tuple[CertAuthority, bool]:
    """The CA in these files, or a new one written there; and whether it was created."""
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except ValueError as exc:
            raise ConfigError(
                f"{cert_path} / {key_path}: not a PEM certificate and key: {exc}"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path}: expected an EC private key")
        return CertAuthority(cert, key), False
    if cert_path.exists() or key_path.exists():
        raise ConfigError(f"only one of {cert_path} and {key_path} exists; restore the other")
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"{org} anju CA", org)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
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
    write_private(key_path, _key_pem(key))
    write_public(cert_path, _cert_pem(cert))
    return CertAuthority(cert, key), True


def _san(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _leaf_ok(cert_path: Path, key_path: Path, ca: CertAuthority, hosts: tuple[str, ...]) -> bool:
    """Whether the certificate there was signed by this CA, has these names and is not near
    its end."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    if cert.issuer != ca.cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    if cert.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    if hosts:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        return san == _san(hosts)
    return True


def issue(
    ca: CertAuthority,
    cert_path: Path,
    key_path: Path,
    *,
    common_name: str,
    org: str,
    hosts: tuple[str, ...] = (),
    client: bool = False,
    force: bool = False,
) -> bool:
    """A leaf certificate (a server's with ``hosts`` as its names, or a client's whose common
    name is its broker user), kept when the one there is still good; whether one was issued."""
    if not force and _leaf_ok(cert_path, key_path, ca, hosts):
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, org))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    write_private(key_path, _key_pem(key))
    write_public(cert_path, _cert_pem(cert))
    return True


def not_after(cert_path: Path) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc


def serial_of(cert_path: Path) -> int | None:
    """The serial number of the certificate there, if there is a readable one."""
    try:
        return x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
    except (OSError, ValueError):
        return None


CRL_DAYS = 365


def revocation_list(
    ca: CertAuthority, path: Path, revoked: dict[int, dt.datetime], *, force: bool = False
) -> bool:
    """The CA's certificate revocation list at ``path`` naming exactly ``revoked`` (serial ->
    when), rewritten only when that set changed or its next update is near (a broker with an
    expired list refuses every client certificate); whether it was written."""
    if not force and path.exists():
        try:
            crl = x509.load_pem_x509_crl(path.read_bytes())
        except ValueError:
            crl = None
        if crl is not None and crl.next_update_utc is not None:
            same = {r.serial_number for r in crl} == set(revoked)
            fresh = crl.next_update_utc - _now() > dt.timedelta(days=RENEW_BEFORE_DAYS)
            if same and fresh and crl.issuer == ca.cert.subject:
                return False
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    write_public(
        path, builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    return True
