"""The operator's Kubernetes client: a thin facade over kubernetes_asyncio (docs/kube-client.md).

Everything the operator does besides kopf's watches goes through ``Kube``:
Jobs, NetworkPolicies, status, Events, Leases. Callers name objects by REST
path (``path()``) and get plain dicts back; the library's generated models are
skipped on purpose (``_preload_content=False``), the operator never needs them
and decoding into them costs time at scale. The library brings the connection
(aiohttp, which kopf already uses), TLS from the kubeconfig or the in-cluster
CA, and loading credentials; this module adds the one thing it lacks: a 401 is
retried once, after ``kubeauth.Credentials.renew`` loaded the credentials again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

from kubernetes_asyncio.client import ApiClient, Configuration

from lightbox.operator.kubeauth import Credentials, Source

GROUP_VERSION = "lightbox.dev/v1alpha1"
CONNECTIONS = 32
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


@dataclass
class _Retired:
    client: ApiClient
    at: float


class Kube:
    def __init__(self, credentials: Credentials, timeout: float = 30.0):
        self.timeout = timeout
        self._credentials = credentials
        self._generation = credentials.generation
        self._api = self._client(credentials.configuration)
        self._retired: list[_Retired] = []

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None, timeout: float = 30.0) -> Kube:
        """A client for the kubeconfig given, else in-cluster, else $KUBECONFIG."""
        return cls(await Credentials.from_source(Source(kubeconfig, context)), timeout)

    @property
    def host(self) -> str:
        return str(self._credentials.configuration.host)

    def _client(self, cfg: Configuration) -> ApiClient:
        cfg.connection_pool_maxsize = CONNECTIONS
        return ApiClient(configuration=cfg)

    async def close(self) -> None:
        for old in self._retired:
            await old.client.close()
        self._retired.clear()
        await self._api.close()

    async def _current(self) -> ApiClient:
        """The client for the newest credentials: a bearer token changes in place, new TLS material gets a new pool."""
        creds = self._credentials
        if creds.generation == self._generation:
            return self._api
        if transport(creds.configuration) == transport(self._api.configuration):
            self._api.configuration = creds.configuration
        else:
            # Requests still on the old pool end within `timeout`; close it after that.
            now = time.monotonic()
            self._retired.append(_Retired(self._api, now))
            self._api = self._client(creds.configuration)
            for old in [r for r in self._retired if now - r.at > 2 * self.timeout]:
                self._retired.remove(old)
                await old.client.close()
        self._generation = creds.generation
        return self._api

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
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        await self._credentials.fresh()
        for attempt in (1, 2):
            generation = self._credentials.generation
            api = await self._current()
            response = await api.call_api(
                url,
                method,
                query_params=list((query or {}).items()),
                header_params=dict(headers),
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            try:
                status, data = response.status, await response.read()
            finally:
                response.release()
            if status != 401 or attempt == 2:
                return status, data
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

    async def list(self, url: str, label_selector: str | None = None) -> list[dict[str, Any]]:
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
