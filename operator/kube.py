"""A small asynchronous Kubernetes REST client on httpx.

The operator's own writes (Jobs, NetworkPolicies, status, Events) go through
this instead of the synchronous `kubernetes` client so they never block kopf's
event loop. Credentials come from the same kubeconfig / in-cluster loading as
the `kubernetes` package, so both agree on which cluster they talk to.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import kubernetes

GROUP_VERSION = "lightbox.dev/v1alpha1"


class KubeError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> kubernetes.client.Configuration:
    cfg = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=cfg)
            return cfg
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    return cfg


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


class Kube:
    def __init__(self, cfg: kubernetes.client.Configuration, timeout: float = 30.0):
        headers = {"Accept": "application/json"}
        token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if token:
            prefix = (cfg.api_key_prefix or {}).get("authorization")
            headers["Authorization"] = f"{prefix} {token}" if prefix and not token.startswith(prefix) else token
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else ssl._create_unverified_context()  # noqa: S323
        if cfg.cert_file and cfg.key_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        self.host = cfg.host.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.host,
            headers=headers,
            verify=context,
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self._client.request(method, url, **kwargs)
        return response

    def _raise(self, response: httpx.Response, method: str, url: str) -> None:
        if response.status_code >= 400:
            raise KubeError(response.status_code, response.text, method, url)

    async def get(self, url: str) -> dict[str, Any] | None:
        response = await self._request("GET", url)
        if response.status_code == 404:
            return None
        self._raise(response, "GET", url)
        return response.json()

    async def list(self, url: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        response = await self._request("GET", url, params=params)
        if response.status_code == 404:
            return []
        self._raise(response, "GET", url)
        return response.json().get("items") or []

    async def create(self, url: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create if absent: (object, created). 409 means a previous attempt (maybe ours,
        before a restart) already made it, which is the state we wanted."""
        response = await self._request("POST", url, json=body)
        if response.status_code == 409:
            existing = await self.get(f"{url}/{body['metadata']['name']}")
            if existing is not None:
                return existing, False
        self._raise(response, "POST", url)
        return response.json(), True

    async def patch(self, url: str, body: dict[str, Any] | list[Any], kind: str = "merge") -> dict[str, Any] | None:
        content_type = {"merge": "application/merge-patch+json", "json": "application/json-patch+json"}[kind]
        response = await self._request("PATCH", url, content=_json(body), headers={"Content-Type": content_type})
        if response.status_code == 404:
            return None
        self._raise(response, "PATCH", url)
        return response.json()

    async def delete(self, url: str, propagation: str = "Background") -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        response = await self._request("DELETE", url, json=body)
        if response.status_code == 404:
            return False
        self._raise(response, "DELETE", url)
        return True


def _json(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode()
