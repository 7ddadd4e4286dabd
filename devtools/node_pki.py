"""The node's certificates, issued by the control plane's CA (devtools/certs.py).

- the kubelet's client certificate: ``system:node:NAME`` in ``system:nodes``, so
  the Node authorizer and NodeRestriction admission limit it to its own node
  and the pods bound there;
- the kubelet's serving certificate for the node's address, which the API server
  verifies (``--kubelet-certificate-authority``) when it proxies ``kubectl logs``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from lightbox.devtools import certs as _certs


@dataclasses.dataclass(frozen=True)
class NodePki:
    dir: Path

    @property
    def client_crt(self) -> Path: return self.dir / "kubelet-client.crt"
    @property
    def client_key(self) -> Path: return self.dir / "kubelet-client.key"
    @property
    def serving_crt(self) -> Path: return self.dir / "kubelet-serving.crt"
    @property
    def serving_key(self) -> Path: return self.dir / "kubelet-serving.key"


def node_user(node_name: str) -> str:
    return f"system:node:{node_name}"


def generate_node_pki(ca: _certs.Pki, out: Path, *, node_name: str, node_ip: str) -> NodePki:
    out.mkdir(parents=True, exist_ok=True)
    pki = NodePki(out)
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_crt.read_bytes())

    key, cert = _certs._leaf(ca_key, ca_cert, _certs._name(node_user(node_name), "system:nodes"),
                             ExtendedKeyUsageOID.CLIENT_AUTH)
    _certs._write(pki.client_crt, _certs._cert_pem(cert))
    _certs._write(pki.client_key, _certs._key_pem(key), private=True)

    sans = [x509.DNSName(node_name), x509.IPAddress(ipaddress.ip_address(node_ip))]
    key, cert = _certs._leaf(ca_key, ca_cert, _certs._name(node_user(node_name), "system:nodes"),
                             ExtendedKeyUsageOID.SERVER_AUTH, sans)
    _certs._write(pki.serving_crt, _certs._cert_pem(cert))
    _certs._write(pki.serving_key, _certs._key_pem(key), private=True)
    return pki
