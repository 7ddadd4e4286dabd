"""The operator's Kubernetes credentials: where they come from, and reading them again.

kubernetes_asyncio loads them as client-go does: the pod's service account
in-cluster, else the kubeconfig with its token, ``tokenFile``, client
certificate or exec plugin. In-cluster it also re-reads the projected token
file once a minute by itself (the kubelet rewrites that file well before the
old token expires). It never looks again when the API server stops accepting
what it loaded (a kubeconfig ``tokenFile`` rewritten, an exec credential
expired or revoked, a service-account token revoked early): ``Credentials.renew``
is that second look, called by ``kube.Kube`` on a 401.

Credentials are only sent where they cannot be read on the way: an
``insecure-skip-tls-verify`` kubeconfig is refused, and plain http is allowed to
loopback addresses only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import kopf
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_KEY = "BearerToken"  # where kubernetes_asyncio keeps the Authorization header's value
# An exec credential is renewed this long before its expirationTimestamp, so no request
# carries it across the API server's clock edge.
EXPIRY_MARGIN = timedelta(seconds=10)


class InsecureConnection(ValueError):
    """The configuration would send credentials where they could be read or forged on the way."""


@dataclass(frozen=True)
class Source:
    """Where to load credentials from: ``kubeconfig`` None means in-cluster first, then $KUBECONFIG."""

    kubeconfig: str | None = None
    context: str | None = None
    service_account_dir: Path = SERVICE_ACCOUNT_DIR

    def describe(self) -> str:
        return self.kubeconfig or "the in-cluster service account or $KUBECONFIG"


@dataclass(frozen=True)
class Loaded:
    configuration: Configuration
    expires: datetime | None = None  # an exec credential's expirationTimestamp, if it gave one


async def load(source: Source) -> Loaded:
    """Credentials read from ``source`` now (token files read, exec plugins run)."""
    cfg = Configuration()
    if source.kubeconfig is None:
        try:
            # Untyped in kubernetes_asyncio (its kubeconfig loader is typed).
            load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=cfg,
                token_filename=str(source.service_account_dir / "token"),
                cert_filename=str(source.service_account_dir / "ca.crt"),
            )
            return Loaded(check(cfg, "the in-cluster service account"))
        except ConfigException:
            pass  # not in a pod: fall back to $KUBECONFIG, as kubectl does
    loader = await load_kube_config(
        config_file=source.kubeconfig, context=source.context, client_configuration=cfg, persist_config=False
    )
    token = cfg.api_key.get(TOKEN_KEY)
    if isinstance(token, str):
        # A token file ending in a newline would otherwise put one into the header.
        cfg.api_key[TOKEN_KEY] = token.strip()
    expires = getattr(loader, "exec_plugin_expiry", None)  # set by the library only when the plugin gave one
    return Loaded(check(cfg, source.describe()), expires if isinstance(expires, datetime) else None)


def check(cfg: Configuration, where: str) -> Configuration:
    """``cfg`` unchanged if it verifies the server and keeps credentials off clear text, else a clear refusal."""
    if not cfg.verify_ssl:
        raise InsecureConnection(
            f"{where}: insecure-skip-tls-verify is set; the operator sends its credentials only to an API "
            "server whose certificate it verifies: give certificate-authority or certificate-authority-data"
        )
    url = urlsplit(cfg.host or "")
    if url.scheme == "https":
        return cfg
    if url.scheme == "http" and _is_loopback(url.hostname or ""):
        return cfg
    raise InsecureConnection(
        f"{where}: server {cfg.host!r} is not https; plain http is allowed to loopback addresses only"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Loader = Callable[[Source], Awaitable[Loaded]]
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Credentials:
    """The current Configuration; ``generation`` counts how often it was loaded anew."""

    def __init__(self, source: Source, loaded: Loaded, loader: Loader = load, clock: Clock = _utcnow):
        self.source = source
        self.configuration = loaded.configuration
        self.expires = loaded.expires
        self.generation = 0
        self._load = loader
        self._clock = clock
        self._lock = asyncio.Lock()

    @classmethod
    async def from_source(cls, source: Source, loader: Loader = load, clock: Clock = _utcnow) -> Credentials:
        return cls(source, await loader(source), loader, clock)

    async def fresh(self) -> None:
        """Renew an exec credential that is about to expire, before it is refused."""
        if self.expires is not None and self._clock() >= self.expires - EXPIRY_MARGIN:
            await self.renew(self.generation, f"the exec credential expires at {self.expires.isoformat()}")

    async def renew(self, failed: int, why: str) -> None:
        """Load the source again after credentials of generation ``failed`` were refused.

        Requests that failed together renew once: whoever comes second finds the
        generation moved on and retries with what the first one loaded."""
        async with self._lock:
            if self.generation != failed:
                return
            loaded = await self._load(self.source)
            self.configuration, self.expires = loaded.configuration, loaded.expires
            self.generation += 1
            log.info(f"credentials loaded again from {self.source.describe()}: {why}")

    async def bearer(self) -> str | None:
        """The Authorization header value now (runs the library's own refresh hook first)."""
        value = await self.configuration.get_api_key_with_prefix(TOKEN_KEY)
        return value if isinstance(value, str) and value else None


async def kopf_login(source: Source) -> kopf.ConnectionInfo:
    """kopf's watches log in with what our own client uses. kopf calls this again after a 401."""
    loaded = await load(source)
    cfg = loaded.configuration
    header = await Credentials(source, loaded).bearer()
    scheme, _, token = (header or "").partition(" ")
    return kopf.ConnectionInfo(
        server=str(cfg.host),
        ca_path=cfg.ssl_ca_cert,
        insecure=False,  # `check` refused anything else
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        scheme=scheme if token else None,
        token=token.strip() or None,
    )
