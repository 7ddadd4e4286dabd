"""The operator's Kubernetes client: aiohttp with kubernetes_asyncio's credentials (docs/kube-client.md).

Everything the operator does besides kopf's watches goes through ``Kube``:
Jobs, NetworkPolicies, status, Events, Leases. Callers name objects by REST
path (``path()``) and get plain dicts back; no generated model is built, the
operator never needs one and decoding into them costs time at scale.
kubernetes_asyncio loads the credentials and TLS material from the kubeconfig or
the in-cluster service account (``kubeauth``); the requests go through one
aiohttp session per TLS configuration, made here rather than by the library's
``ApiClient``: that one is built with ``trust_env=True``, so each request looked
up ``~/.netrc`` and the proxy environment in a worker thread (a quarter of the
operator's samples with 5,000 Validations, docs/performance.md). The proxy
environment is read once, when a session is made. This module adds one more
thing: a 401 is retried once, after ``kubeauth.Credentials.renew`` loaded the
credentials again.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from kubernetes_asyncio.client import Configuration

from lightbox.operator.kubeauth import Credentials, Source

GROUP_VERSION = "lightbox.dev/v1alpha1"
CONNECTIONS = 32
PAGE = 500  # objects per request of a paged LIST, as kubectl and client-go's pager
# Watch-sized bodies can exceed aiohttp's default read buffer (etcd allows 1.5 MiB objects).
READ_BUFFER = 2**21
USER_AGENT = "lightbox-operator"
PatchBody = dict[str, Any] | list[Any]  # a merge patch or a JSON patch


class KubeError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


def path(kind: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
    """REST path of a collection or object. ``kind`` is the plural as in RBAC: jobs, pods, validations..."""
    prefixes = {
        "pods": "/api/v1",
        "events": "/api/v1",
        "namespaces": "/api/v1",
        "jobs": "/apis/batch/v1",
        "networkpolicies": "/apis/networking.k8s.io/v1",
        "validations": f"/apis/{GROUP_VERSION}",
        "algorithms": f"/apis/{GROUP_VERSION}",
        "datasets": f"/apis/{GROUP_VERSION}",
        "sandboxpolicies": f"/apis/{GROUP_VERSION}",
        "auditrecords": f"/apis/{GROUP_VERSION}",
        "algorithmapprovals": f"/apis/{GROUP_VERSION}",
    }
    out = prefixes[kind]
    if namespace is not None:
        out += f"/namespaces/{namespace}"
    out += f"/{kind}"
    if name is not None:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def transport(cfg: Configuration) -> tuple[Any, ...]:
    """What the connection pool was built from: when renewed credentials change it, a new pool is needed."""
    return (cfg.host, cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file, cfg.verify_ssl, cfg.tls_server_name, cfg.proxy)


def proxy_for(host: str, kubeconfig_proxy: str | None) -> str | None:
    """The proxy for requests to ``host``: the kubeconfig's ``proxy-url``, else the environment's
    (HTTPS_PROXY/HTTP_PROXY unless NO_PROXY names the host, as client-go does), else none.

    Read when a connection pool is made, not per request."""
    if kubeconfig_proxy:
        return kubeconfig_proxy
    url = urllib.parse.urlsplit(host)
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    if not proxy or urllib.request.proxy_bypass(url.hostname or ""):
        return None
    return proxy


def tls_context(cfg: Configuration) -> ssl.SSLContext:
    """Server verification and client certificate as the kubeconfig or the service account gives them
    (``kubeauth.check`` refused an unverified configuration before it got here)."""
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, keyfile=cfg.key_file)
    return context


@dataclass
class _Pool:
    """One TLS configuration's connections. ``trust_env=False``: no netrc or proxy lookup per request."""

    session: aiohttp.ClientSession
    configuration: Configuration
    proxy: str | None

    @classmethod
    def open(cls, cfg: Configuration) -> _Pool:
        connector = aiohttp.TCPConnector(limit=CONNECTIONS, ssl=tls_context(cfg))
        session = aiohttp.ClientSession(connector=connector, trust_env=False, read_bufsize=READ_BUFFER)
        return cls(session, cfg, proxy_for(str(cfg.host), cfg.proxy))


@dataclass
class _Retired:
    pool: _Pool
    at: float


class Kube:
    def __init__(self, credentials: Credentials, timeout: float = 30.0):
        self.timeout = timeout
        self._credentials = credentials
        self._generation = credentials.generation
        self._pool = _Pool.open(credentials.configuration)
        self._retired: list[_Retired] = []

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None, timeout: float = 30.0) -> Kube:
        """A client for the kubeconfig given, else in-cluster, else $KUBECONFIG."""
        return cls(await Credentials.from_source(Source(kubeconfig, context)), timeout)

    @property
    def host(self) -> str:
        return str(self._credentials.configuration.host)

    async def close(self) -> None:
        for old in self._retired:
            await old.pool.session.close()
        self._retired.clear()
        await self._pool.session.close()

    async def _current(self) -> _Pool:
        """The pool for the newest credentials: a bearer token changes in place, new TLS material gets a new pool."""
        creds = self._credentials
        if creds.generation == self._generation:
            return self._pool
        if transport(creds.configuration) == transport(self._pool.configuration):
            self._pool.configuration = creds.configuration
        else:
            # Requests still on the old pool end within `timeout`; close it after that.
            now = time.monotonic()
            self._retired.append(_Retired(self._pool, now))
            self._pool = _Pool.open(creds.configuration)
            for old in [r for r in self._retired if now - r.at > 2 * self.timeout]:
                self._retired.remove(old)
                await old.pool.session.close()
        self._generation = creds.generation
        return self._pool

    async def _send(
        self,
        method: str,
        url: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of one request; a 401 is answered by loading the credentials again and trying once more."""
        await self._credentials.fresh()
        data = None if body is None else json.dumps(body)
        for attempt in (1, 2):
            generation = self._credentials.generation
            pool = await self._current()
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT,
                       "Content-Type": content_type or "application/json"}
            bearer = await self._credentials.bearer()  # runs the in-cluster token file's refresh hook
            if bearer:
                headers["Authorization"] = bearer
            async with pool.session.request(
                method,
                str(pool.configuration.host) + url,
                params=query,
                data=data,
                headers=headers,
                proxy=pool.proxy,
                server_hostname=pool.configuration.tls_server_name or None,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                status, payload = response.status, await response.read()
            if status != 401 or attempt == 2:
                return status, payload
            await self._credentials.renew(generation, f"{method} {url} was refused (HTTP 401)")
        raise AssertionError("unreachable")

    async def _json(self, method: str, url: str, expect_absent: bool, **kwargs: Any) -> Any:
        status, data = await self._send(method, url, **kwargs)
        if status == 404 and expect_absent:
            return None
        if status >= 400:
            raise KubeError(status, data.decode(errors="replace"), method, url)
        return json.loads(data)

    async def get(self, url: str) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", await self._json("GET", url, True))

    async def pages(
        self, url: str, label_selector: str | None = None, limit: int = PAGE
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A collection ``limit`` objects at a time (the API server's ``continue`` tokens): a caller that
        keeps a few fields of each never holds the whole list, decoded or not, at once."""
        query = {"limit": str(limit)}
        if label_selector:
            query["labelSelector"] = label_selector
        while True:
            found = await self._json("GET", url, True, query=query) or {}
            yield cast("list[dict[str, Any]]", found.get("items") or [])
            token = (found.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token

    async def list(self, url: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        """One request, no ``limit``: the API server answers it from its watch cache, where a
        paged LIST without a resourceVersion may go to etcd. For the small, label-selected
        lists of a pass; a whole collection goes through ``pages``."""
        query = {"labelSelector": label_selector} if label_selector else None
        found = await self._json("GET", url, True, query=query)
        return cast("list[dict[str, Any]]", (found or {}).get("items") or [])

    async def create(self, url: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create if absent: (object, created). 409 means a previous attempt (maybe ours,
        before a restart) already made it, which is the state we wanted."""
        status, data = await self._send("POST", url, body=body)
        if status == 409:
            existing = await self.get(f"{url}/{body['metadata']['name']}")
            if existing is not None:
                return existing, False
        if status >= 400:
            raise KubeError(status, data.decode(errors="replace"), "POST", url)
        return cast("dict[str, Any]", json.loads(data)), True

    async def patch(self, url: str, body: PatchBody, kind: str = "merge") -> dict[str, Any] | None:
        content_type = {"merge": "application/merge-patch+json", "json": "application/json-patch+json"}[kind]
        return cast("dict[str, Any] | None", await self._json("PATCH", url, True, body=body, content_type=content_type))

    async def delete(self, url: str, propagation: str = "Background") -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        status, data = await self._send("DELETE", url, body=body)
        if status == 404:
            return False
        if status >= 400:
            raise KubeError(status, data.decode(errors="replace"), "DELETE", url)
        return True
