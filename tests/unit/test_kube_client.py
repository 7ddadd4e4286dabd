"""The operator's client keeps its credentials fresh (operator/kube.py, operator/kubeauth.py).

A real HTTPS server on loopback (aiohttp.web, certificate from our own test CA)
plays the API server: it accepts only the tokens in ``accepted`` and logs every
request's path, token and answer, so each test counts round trips by hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from aiohttp import ClientConnectorCertificateError, web

from lightbox.devtools import certs
from lightbox.operator.kube import Kube, KubeError, path
from lightbox.operator.kubeauth import Credentials, InsecureConnection, Source, kopf_login, load


@dataclass
class FakeApiServer:
    accepted: set[str]
    log: list[tuple[str, str, str, int]] = field(default_factory=list)  # (method, path, token, status)
    url: str = ""
    forbidden: set[str] = field(default_factory=set)  # paths the accepted tokens may not touch

    async def handle(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        status = 401 if token not in self.accepted else 403 if request.path in self.forbidden else 200
        self.log.append((request.method, request.path, token, status))
        if status != 200:
            return web.json_response({"kind": "Status", "code": status}, status=status)
        name = request.path.rsplit("/", 1)[-1]
        return web.json_response({"kind": "Job", "metadata": {"name": name}})

    def tokens(self) -> list[tuple[str, int]]:
        return [(token, status) for _, _, token, status in self.log]


@asynccontextmanager
async def serving(pki: certs.Pki, accepted: set[str]) -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer(accepted)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.serving_crt, pki.serving_key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"https://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def write_kubeconfig(where: Path, server: str, ca: Path | None, user: dict[str, Any], **cluster: Any) -> Path:
    entry: dict[str, Any] = {"server": server, **cluster}
    if ca is not None:
        entry["certificate-authority"] = str(ca)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": entry}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    where.write_text(yaml.safe_dump(doc))
    return where


EXEC_PLUGIN = """\
import json, pathlib, sys
state = pathlib.Path(sys.argv[1])
runs = state / "runs"
runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else "1")
status = {"token": (state / "token").read_text()}
if (state / "expires").exists():
    status["expirationTimestamp"] = (state / "expires").read_text()
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": status}))
"""


def exec_user(state: Path) -> dict[str, Any]:
    plugin = state / "plugin.py"
    plugin.write_text(EXEC_PLUGIN)
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
                     "args": [str(plugin), str(state)], "interactiveMode": "Never"}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.Pki:
    return certs.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> certs.Pki:
    return certs.generate(tmp_path_factory.mktemp("other-pki"))


async def connect(where: Path, server: str, ca: Path | None, user: dict[str, Any]) -> Kube:
    return await Kube.connect(str(write_kubeconfig(where / "kubeconfig", server, ca, user)))


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


# -- a kubeconfig tokenFile rewritten while the client runs -----------------------


def test_a_rewritten_token_file_is_read_after_the_401_and_the_request_goes_through(
    pki: certs.Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token")

    async def scenario() -> None:
        async with serving(pki, {"old-token"}) as server:
            kube = await connect(tmp_path, server.url, pki.ca_crt, {"tokenFile": str(token_file)})
            try:
                assert await kube.get(path("jobs", "ns", "a")) == {"kind": "Job", "metadata": {"name": "a"}}
                token_file.write_text("new-token")  # what the kubelet does when it rotates the token
                server.accepted = {"new-token"}  # the old one is revoked
                assert await kube.get(path("jobs", "ns", "b")) == {"kind": "Job", "metadata": {"name": "b"}}
                assert await kube.get(path("jobs", "ns", "c")) is not None
            finally:
                await kube.close()
        # Counted by hand: one 401 with the old token, then only the new one.
        assert server.tokens() == [("old-token", 200), ("old-token", 401), ("new-token", 200), ("new-token", 200)]

    with caplog.at_level(logging.INFO, logger="lightbox.operator.kubeauth"):
        run(scenario)
    assert [r.getMessage() for r in caplog.records if r.name == "lightbox.operator.kubeauth"] == [
        f"credentials loaded again from {tmp_path / 'kubeconfig'}: "
        "GET /apis/batch/v1/namespaces/ns/jobs/b was refused (HTTP 401)"
    ]
    assert "new-token" not in caplog.text  # a token is never logged


def test_a_401_is_retried_once_then_reported_with_its_status(pki: certs.Pki, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("revoked")

    async def scenario() -> None:
        async with serving(pki, set()) as server:
            kube = await connect(tmp_path, server.url, pki.ca_crt, {"tokenFile": str(token_file)})
            try:
                with pytest.raises(KubeError) as refused:
                    await kube.create(path("jobs", "ns"), {"metadata": {"name": "j"}})
            finally:
                await kube.close()
        assert refused.value.status == 401
        assert "POST /apis/batch/v1/namespaces/ns/jobs: HTTP 401" in str(refused.value)
        assert server.tokens() == [("revoked", 401), ("revoked", 401)]

    run(scenario)


def test_a_403_is_not_taken_for_stale_credentials(pki: certs.Pki, tmp_path: Path) -> None:
    """Forbidden is RBAC saying no to the identity we have: loading it again changes nothing, so no retry."""
    state = tmp_path / "plugin"
    state.mkdir()
    (state / "token").write_text("t")

    async def scenario() -> None:
        async with serving(pki, {"t"}) as server:
            server.forbidden = {"/api/v1/namespaces/kube-system/secrets/x"}
            kube = await connect(tmp_path, server.url, pki.ca_crt, exec_user(state))
            try:
                with pytest.raises(KubeError) as refused:
                    await kube.get("/api/v1/namespaces/kube-system/secrets/x")
            finally:
                await kube.close()
        assert refused.value.status == 403
        assert server.tokens() == [("t", 403)]
        assert (state / "runs").read_text() == "1"

    run(scenario)


def test_requests_refused_together_load_the_credentials_once(pki: certs.Pki, tmp_path: Path) -> None:
    """Twenty requests see the same 401: one exec-plugin run renews them all, not twenty."""
    state = tmp_path / "plugin"
    state.mkdir()
    (state / "token").write_text("first")

    async def scenario() -> None:
        async with serving(pki, {"first"}) as server:
            kube = await connect(tmp_path, server.url, pki.ca_crt, exec_user(state))
            try:
                assert (state / "runs").read_text() == "1"
                (state / "token").write_text("second")
                server.accepted = {"second"}
                found = await asyncio.gather(*(kube.get(path("pods", "ns", f"p{i}")) for i in range(20)))
            finally:
                await kube.close()
        assert all(found)
        assert (state / "runs").read_text() == "2"
        assert sum(1 for token, status in server.tokens() if token == "second" and status == 200) == 20

    run(scenario)


def test_an_exec_credential_is_not_fetched_again_while_it_is_accepted(pki: certs.Pki, tmp_path: Path) -> None:
    state = tmp_path / "plugin"
    state.mkdir()
    (state / "token").write_text("only")

    async def scenario() -> None:
        async with serving(pki, {"only"}) as server:
            kube = await connect(tmp_path, server.url, pki.ca_crt, exec_user(state))
            try:
                for i in range(5):
                    await kube.get(path("pods", "ns", f"p{i}"))
            finally:
                await kube.close()
        assert (state / "runs").read_text() == "1"
        assert server.tokens() == [("only", 200)] * 5

    run(scenario)


def test_an_exec_credential_is_renewed_at_its_expiry_without_waiting_for_a_401(pki: certs.Pki, tmp_path: Path) -> None:
    state = tmp_path / "plugin"
    state.mkdir()
    (state / "token").write_text("hour-1")
    (state / "expires").write_text("2026-12-01T10:00:00Z")
    now = [datetime(2026, 12, 1, 9, 0, tzinfo=UTC)]

    async def scenario() -> None:
        async with serving(pki, {"hour-1", "hour-2"}) as server:  # the API server would still take both
            kubeconfig = write_kubeconfig(tmp_path / "kc", server.url, pki.ca_crt, exec_user(state))
            kube = Kube(await Credentials.from_source(Source(str(kubeconfig)), clock=lambda: now[0]))
            try:
                await kube.get(path("pods", "ns", "a"))
                (state / "token").write_text("hour-2")
                (state / "expires").write_text("2026-12-01T11:00:00Z")
                now[0] = datetime(2026, 12, 1, 9, 59, 49, tzinfo=UTC)  # 11 s before the expiry: still good
                await kube.get(path("pods", "ns", "b"))
                now[0] = datetime(2026, 12, 1, 9, 59, 51, tzinfo=UTC)  # inside the 10 s margin
                await kube.get(path("pods", "ns", "c"))
                await kube.get(path("pods", "ns", "d"))
            finally:
                await kube.close()
        assert server.tokens() == [("hour-1", 200), ("hour-1", 200), ("hour-2", 200), ("hour-2", 200)]
        assert (state / "runs").read_text() == "2"

    run(scenario)


EXEC_CERT_PLUGIN = """\
import json, pathlib, sys
state = pathlib.Path(sys.argv[1])
which = (state / "which").read_text()
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential", "status": {
    "clientCertificateData": (state / f"{which}.crt").read_text(),
    "clientKeyData": (state / f"{which}.key").read_text()}}))
"""


def test_a_renewed_client_certificate_gets_a_new_connection(pki: certs.Pki, tmp_path: Path) -> None:
    """An exec plugin hands out client certificates: after a 401 the next one is presented in a new TLS handshake."""
    state = tmp_path / "plugin"
    state.mkdir()
    for name, crt, key in (("admin", pki.admin_crt, pki.admin_key), ("kcm", pki.kcm_crt, pki.kcm_key)):
        (state / f"{name}.crt").write_bytes(crt.read_bytes())
        (state / f"{name}.key").write_bytes(key.read_bytes())
    (state / "which").write_text("admin")
    plugin = state / "plugin.py"
    plugin.write_text(EXEC_CERT_PLUGIN)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
                     "args": [str(plugin), str(state)], "interactiveMode": "Never"}}
    seen: list[tuple[str, int]] = []
    accepted = {"lightbox-admin"}

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item[0] for item in (peer or {}).get("subject", ()))
        name = str(subject.get("commonName", ""))
        status = 200 if name in accepted else 401
        seen.append((name, status))
        return web.json_response({"kind": "Status"} if status == 401 else {"kind": "Pod"}, status=status)

    async def scenario() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_crt))
        context.load_cert_chain(pki.serving_crt, pki.serving_key)
        context.verify_mode = ssl.CERT_REQUIRED
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        kube = await connect(tmp_path, f"https://127.0.0.1:{runner.addresses[0][1]}", pki.ca_crt, user)
        try:
            await kube.get(path("pods", "ns", "a"))
            (state / "which").write_text("kcm")
            accepted.clear()
            accepted.add("lightbox-controller-manager")
            await kube.get(path("pods", "ns", "b"))
            await kube.get(path("pods", "ns", "c"))
        finally:
            await kube.close()
            await runner.cleanup()

    run(scenario)
    assert seen == [("lightbox-admin", 200), ("lightbox-admin", 401),
                    ("lightbox-controller-manager", 200), ("lightbox-controller-manager", 200)]


# -- in-cluster: the projected service-account token ---------------------------


def service_account(where: Path, pki: certs.Pki, token: str) -> Path:
    where.mkdir()
    (where / "token").write_text(token)
    (where / "ca.crt").write_bytes(pki.ca_crt.read_bytes())
    (where / "namespace").write_text("lightbox-system")
    return where


def test_in_cluster_the_rotated_service_account_token_is_used_after_a_401(
    pki: certs.Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = service_account(tmp_path / "sa", pki, "pod-token-1")

    async def scenario() -> None:
        async with serving(pki, {"pod-token-1"}) as server:
            monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            monkeypatch.setenv("KUBERNETES_SERVICE_PORT", server.url.rsplit(":", 1)[1])
            kube = Kube(await Credentials.from_source(Source(service_account_dir=account)))
            try:
                assert kube.host == server.url
                await kube.get(path("pods", "ns", "a"))
                (account / "token").write_text("pod-token-2")
                server.accepted = {"pod-token-2"}
                await kube.get(path("pods", "ns", "b"))
            finally:
                await kube.close()
        assert server.tokens() == [("pod-token-1", 200), ("pod-token-1", 401), ("pod-token-2", 200)]

    run(scenario)


def test_in_cluster_a_rewritten_token_file_is_picked_up_within_a_minute_without_a_401(
    pki: certs.Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet rewrites the file while the old token is still good: the library's hook switches within 60 s."""
    from kubernetes_asyncio.config import incluster_config

    account = service_account(tmp_path / "sa", pki, "pod-token-1")
    now = [datetime(2026, 12, 1, 9, 0)]
    monkeypatch.setattr(incluster_config, "datetime", SimpleNamespace(datetime=SimpleNamespace(now=lambda: now[0])))

    async def scenario() -> None:
        async with serving(pki, {"pod-token-1", "pod-token-2"}) as server:
            monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            monkeypatch.setenv("KUBERNETES_SERVICE_PORT", server.url.rsplit(":", 1)[1])
            kube = Kube(await Credentials.from_source(Source(service_account_dir=account)))
            try:
                await kube.get(path("pods", "ns", "a"))
                (account / "token").write_text("pod-token-2")
                now[0] = datetime(2026, 12, 1, 9, 0, 59)
                await kube.get(path("pods", "ns", "b"))
                now[0] = datetime(2026, 12, 1, 9, 1, 0)
                await kube.get(path("pods", "ns", "c"))
            finally:
                await kube.close()
        assert server.tokens() == [("pod-token-1", 200), ("pod-token-1", 200), ("pod-token-2", 200)]

    run(scenario)


def test_kopf_logs_in_again_with_the_token_file_as_it_is_now(pki: certs.Pki, tmp_path: Path) -> None:
    """kopf calls the login handler again after a 401: it must see the rewritten file, not a copy."""
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    kubeconfig = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:6443", pki.ca_crt, {"tokenFile": str(token_file)})
    source = Source(str(kubeconfig))

    first = run(lambda: kopf_login(source))
    token_file.write_text("two")
    second = run(lambda: kopf_login(source))
    assert (first.scheme, first.token, second.token) == ("Bearer", "one", "two")
    assert (first.server, first.ca_path, first.insecure) == ("https://127.0.0.1:6443", str(pki.ca_crt), False)


# -- TLS ------------------------------------------------------------------------


def test_a_server_certificate_from_another_ca_is_refused(
    pki: certs.Pki, other_pki: certs.Pki, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with serving(other_pki, {"t"}) as server:
            kube = await connect(tmp_path, server.url, pki.ca_crt, {"token": "t"})
            try:
                with pytest.raises(ClientConnectorCertificateError):
                    await kube.get(path("pods", "ns", "a"))
            finally:
                await kube.close()
        assert server.log == []  # the token never reached the impostor

    run(scenario)


def test_insecure_skip_tls_verify_is_refused_naming_the_field(pki: certs.Pki, tmp_path: Path) -> None:
    insecure = {"insecure-skip-tls-verify": True}
    kc = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:6443", None, {"token": "t"}, **insecure)
    with pytest.raises(InsecureConnection, match="insecure-skip-tls-verify is set.*certificate-authority"):
        run(lambda: load(Source(str(kc))))


@pytest.mark.parametrize(
    ("server", "allowed"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://[::1]:8080", True),
        ("http://localhost:8080", True),
        ("http://10.0.0.1:8080", False),
        ("http://kubernetes.default.svc", False),
        ("http://127.0.0.1.attacker.example:80", False),
    ],
)
def test_plain_http_only_to_loopback(pki: certs.Pki, tmp_path: Path, server: str, allowed: bool) -> None:
    kc = write_kubeconfig(tmp_path / "kc", server, None, {"token": "t"})
    if allowed:
        assert run(lambda: load(Source(str(kc)))).configuration.host == server
    else:
        with pytest.raises(InsecureConnection, match="plain http is allowed to loopback addresses only"):
            run(lambda: load(Source(str(kc))))


def test_the_client_sends_json_bodies_and_reads_status_codes(pki: certs.Pki, tmp_path: Path) -> None:
    """create/patch/delete through the facade: the methods and content types the API server expects."""
    seen: list[tuple[str, str, str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        seen.append((request.method, request.path_qs, content_type, json.loads(body) if body else None))
        if request.method == "DELETE":
            return web.json_response({"kind": "Status"}, status=404)
        return web.json_response({"ok": request.method})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        kube = await connect(tmp_path, url, None, {"token": "t"})
        try:
            assert await kube.list(path("pods", "ns"), "a=b") == []
            assert await kube.patch(path("validations", "ns", "v", "status"), {"status": {"x": 1}}) == {"ok": "PATCH"}
            assert await kube.delete(path("jobs", "ns", "j")) is False
        finally:
            await kube.close()
            await runner.cleanup()

    run(scenario)
    assert seen == [
        ("GET", "/api/v1/namespaces/ns/pods?labelSelector=a%3Db", "application/json", None),
        ("PATCH", "/apis/lightbox.dev/v1alpha1/namespaces/ns/validations/v/status", "application/merge-patch+json",
         {"status": {"x": 1}}),
        ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j", "application/json",
         {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}),
    ]

