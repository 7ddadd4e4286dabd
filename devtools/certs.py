"""Certificates and keys for a throw-away loopback control plane.

One CA signs the kube-apiserver serving certificate and the client certificates
(admin and kube-controller-manager, both in group ``system:masters``); a
separate key pair signs and verifies service-account tokens. ECDSA P-256
throughout: quick to generate and accepted by kube-apiserver, kubectl and the
Python client.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The first address of --service-cluster-ip-range (the `kubernetes` Service's ClusterIP).
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"

SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVING_IPS = ("127.0.0.1", "::1", KUBERNETES_SERVICE_IP)

_VALIDITY = dt.timedelta(days=365)


@dataclasses.dataclass(frozen=True)
class Pki:
    """File paths of the generated material (all PEM)."""

    dir: Path

    @property
    def ca_crt(self) -> Path: return self.dir / "ca.crt"
    @property
    def ca_key(self) -> Path: return self.dir / "ca.key"
    @property
    def serving_crt(self) -> Path: return self.dir / "apiserver.crt"
    @property
    def serving_key(self) -> Path: return self.dir / "apiserver.key"
    @property
    def admin_crt(self) -> Path: return self.dir / "admin.crt"
    @property
    def admin_key(self) -> Path: return self.dir / "admin.key"
    @property
    def kcm_crt(self) -> Path: return self.dir / "controller-manager.crt"
    @property
    def kcm_key(self) -> Path: return self.dir / "controller-manager.key"
    @property
    def sa_key(self) -> Path: return self.dir / "sa.key"
    @property
    def sa_pub(self) -> Path: return self.dir / "sa.pub"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: dt.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _leaf(ca_key, ca_cert: x509.Certificate, subject: x509.Name, usage, sans=None):
    now = dt.datetime.now(dt.UTC)
    key = _key()
    b = (
        _builder(subject, ca_cert.subject, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def generate(directory: Path, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Write a fresh CA, serving cert, client certs and service-account keys into ``directory``.

    ``extra_ips``: more addresses the apiserver's serving certificate is valid for
    (a real node reaches it on a non-loopback address).
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    now = dt.datetime.now(dt.UTC)

    ca_key = _key()
    ca_name = _name("lightbox-control-plane-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki.ca_crt, _cert_pem(ca_cert))
    _write(pki.ca_key, _key_pem(ca_key), private=True)

    sans = [x509.DNSName(n) for n in SERVING_DNS_NAMES] + [
        x509.IPAddress(ipaddress.ip_address(i)) for i in (*SERVING_IPS, *extra_ips)
    ]
    key, cert = _leaf(ca_key, ca_cert, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    _write(pki.serving_crt, _cert_pem(cert))
    _write(pki.serving_key, _key_pem(key), private=True)

    key, cert = _leaf(ca_key, ca_cert, _name("lightbox-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(pki.admin_crt, _cert_pem(cert))
    _write(pki.admin_key, _key_pem(key), private=True)

    key, cert = _leaf(ca_key, ca_cert, _name("lightbox-controller-manager", "system:masters"),
                      ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(pki.kcm_crt, _cert_pem(cert))
    _write(pki.kcm_key, _key_pem(key), private=True)

    sa = _key()
    _write(pki.sa_key, _key_pem(sa), private=True)
    _write(pki.sa_pub, sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki
