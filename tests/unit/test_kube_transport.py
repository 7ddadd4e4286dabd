"""The operator's client makes its HTTP session once and reads the environment once (operator/kube.py).

kubernetes_asyncio's own session is built with ``trust_env=True``: every request
then read ``~/.netrc`` and the proxy environment in a worker thread (a quarter
of the operator's samples with 5,000 Validations, docs/performance.md), and a
netrc entry for the API server's host broke every request that carried a bearer
token (aiohttp refuses an Authorization header next to netrc credentials). The
API server here is a real HTTPS server on loopback; the proxy a real CONNECT
proxy on loopback that counts the tunnels it opened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import netrc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lightbox.devtools import certs
from lightbox.operator.kube import Kube, path, proxy_for
from tests.unit.test_kube_client import pki, serving, write_kubeconfig  # noqa: F401  (pki is a fixture)

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
                   "all_proxy")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor (asyncio.to_thread, run_in_executor(None, ...)), counting what it is given."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.submitted.append(getattr(fn, "__qualname__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


def test_requests_take_no_thread_hop_and_never_read_netrc(
    pki: certs.Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    # A netrc entry for the API server's host: a session that trusts the environment
    # reads it (in a thread) on every request and then refuses the bearer header.
    rc = tmp_path / "netrc"
    rc.write_text("machine 127.0.0.1 login intruder password netrc-secret\n")
    rc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(rc))
    monkeypatch.setenv("HOME", str(tmp_path))
    reads: list[str] = []
    real_netrc = netrc.netrc

    def counting_netrc(file: str | None = None) -> netrc.netrc:
        reads.append(str(file))
        return real_netrc(file)

    monkeypatch.setattr(netrc, "netrc", counting_netrc)
    sessions: list[aiohttp.ClientSession] = []
    real_init = aiohttp.ClientSession.__init__

    def counting_init(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        sessions.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", counting_init)
    executor = CountingExecutor()

    async def scenario() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        async with serving(pki, {"the-token"}) as server:
            kube = await Kube.connect(str(write_kubeconfig(tmp_path / "kc", server.url, pki.ca_crt,
                                                           {"token": "the-token"})))
            try:
                before = len(executor.submitted)
                for index in range(20):
                    assert await kube.get(path("jobs", "ns", f"j{index}")) is not None
                assert executor.submitted[before:] == []  # counted by hand: no thread for 20 requests
            finally:
                await kube.close()
        # Every request reached the server with the bearer token, none with the netrc password.
        assert server.tokens() == [("the-token", 200)] * 20

    asyncio.run(scenario())
    executor.shutdown()
    assert reads == []
    assert len(sessions) == 1


@asynccontextmanager
async def connect_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTP CONNECT proxy: (its URL, the host:port of every tunnel it opened)."""
    tunnels: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT" or not target.startswith("127.0.0.1:"):
            writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")  # loopback only: never a tunnel elsewhere
            writer.close()
            return
        tunnels.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", tunnels
    finally:
        proxy.close()


@pytest.mark.parametrize("no_proxy", [None, "127.0.0.1", "localhost,127.0.0.1", "*"])
def test_https_proxy_from_the_environment_is_used_unless_no_proxy_names_the_server(
    pki: certs.Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: str | None  # noqa: F811
) -> None:
    async def scenario() -> list[str]:
        async with serving(pki, {"t"}) as server, connect_proxy() as (proxy_url, tunnels):
            monkeypatch.setenv("HTTPS_PROXY", proxy_url)
            if no_proxy is not None:
                monkeypatch.setenv("NO_PROXY", no_proxy)
            kube = await Kube.connect(str(write_kubeconfig(tmp_path / "kc", server.url, pki.ca_crt, {"token": "t"})))
            try:
                # Read once, when the client was made: a later change does not move its requests.
                monkeypatch.delenv("HTTPS_PROXY")
                monkeypatch.delenv("NO_PROXY", raising=False)
                for index in range(3):
                    assert await kube.get(path("jobs", "ns", f"j{index}")) is not None
            finally:
                await kube.close()
            return list(tunnels)

    tunnels = asyncio.run(scenario())
    if no_proxy is None:
        # Through the proxy, TLS end to end with the API server; one kept-alive tunnel.
        assert len(tunnels) == 1 and tunnels[0].startswith("127.0.0.1:")
    else:
        assert tunnels == []


def test_the_kubeconfig_proxy_url_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")
    assert proxy_for("https://127.0.0.1:6443", "http://127.0.0.1:2") == "http://127.0.0.1:2"
    assert proxy_for("https://127.0.0.1:6443", None) == "http://127.0.0.1:1"
    monkeypatch.setenv("NO_PROXY", ".cluster.local")
    assert proxy_for("https://kubernetes.default.svc.cluster.local:443", None) is None
    assert proxy_for("https://127.0.0.1:6443", None) == "http://127.0.0.1:1"


def test_a_collection_is_read_in_pages_with_the_servers_continue_tokens(tmp_path: Path) -> None:
    """A fake API server that pages as the real one does (limit, continue): 1,234 objects arrive
    whole and in order, in pages of at most 500 (counted by hand: 500, 500, 234)."""
    from aiohttp import web

    names = [f"v{index:04d}" for index in range(1234)]
    asked: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        limit, start = int(request.query.get("limit", 10**6)), int(request.query.get("continue") or 0)
        end = min(start + limit, len(names))
        meta = {"continue": str(end)} if end < len(names) else {}
        return web.json_response({"items": [{"metadata": {"name": n}} for n in names[start:end]], "metadata": meta})

    async def scenario() -> tuple[list[int], list[str]]:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        kube = await Kube.connect(str(write_kubeconfig(tmp_path / "kc", url, None, {"token": "t"})))
        try:
            sizes = [len(page) async for page in kube.pages(path("validations", "ns"), "a=b")]
            listed = [item["metadata"]["name"] async for page in kube.pages(path("validations", "ns"))
                      for item in page]
        finally:
            await kube.close()
            await runner.cleanup()
        return sizes, listed

    sizes, listed = asyncio.run(scenario())
    assert sizes == [500, 500, 234]
    assert listed == names
    assert asked[:3] == [{"limit": "500", "labelSelector": "a=b"},
                         {"limit": "500", "labelSelector": "a=b", "continue": "500"},
                         {"limit": "500", "labelSelector": "a=b", "continue": "1000"}]
