"""The operator's liveness endpoint: kopf's /healthz on the operator's event loop.

The chart's probes ask it because it stops answering when the loop hangs; /metrics, served
by prometheus_client from a thread of its own, keeps answering (the reason it is not the probe).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.error
import urllib.request

import kopf
import prometheus_client
import pytest
from kopf._core.engines.indexing import OperatorIndexers
from kopf._core.engines.probing import health_reporter

from lightbox.operator import main as operator_main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, TimeoutError, OSError):
        return False


def test_healthz_stops_answering_when_the_event_loop_hangs_and_metrics_does_not():
    health_port, metrics_port = _free_port(), _free_port()
    metrics_server, metrics_thread = prometheus_client.start_http_server(metrics_port, addr="127.0.0.1",
                                                                         registry=prometheus_client.CollectorRegistry())
    loop = asyncio.new_event_loop()
    ready = asyncio.Event()
    release = threading.Event()
    registry = kopf.OperatorRegistry()
    task_holder: list[asyncio.Task] = []

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        task = loop.create_task(health_reporter(
            f"http://127.0.0.1:{health_port}/healthz", memo=kopf.Memo(), indices=OperatorIndexers().indices,
            registry=registry, settings=kopf.OperatorSettings(), ready_flag=ready))
        task_holder.append(task)
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=run_loop, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if ready.is_set():
                break
            release.wait(0.05)
        assert ready.is_set(), "kopf's health reporter did not start"
        healthz, metrics = f"http://127.0.0.1:{health_port}/healthz", f"http://127.0.0.1:{metrics_port}/metrics"
        assert _answers(healthz) and _answers(metrics)
        # A handler that blocks the loop (a sync call in async code, a deadlock): the loop is hung.
        loop.call_soon_threadsafe(release.wait)
        assert not _answers(healthz)
        assert _answers(metrics)  # why /metrics cannot be the liveness probe
        release.set()
        assert _answers(healthz)  # the loop is back, and so is the endpoint
    finally:
        release.set()
        loop.call_soon_threadsafe(task_holder[0].cancel)
        thread.join(10)
        metrics_server.shutdown()


def test_main_serves_kopf_liveness_on_the_health_port(monkeypatch):
    seen: dict = {}
    monkeypatch.setattr(kopf, "run", lambda **kw: seen.update(kw))
    monkeypatch.delenv("LIGHTBOX_HEALTH_PORT", raising=False)
    assert operator_main.main(["--health-port", "8080", "--metrics-port", "-1"]) == 0
    assert seen["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
    seen.clear()
    assert operator_main.main(["--metrics-port", "-1"]) == 0
    assert seen["liveness_endpoint"] is None  # no port, no endpoint (the local runner)
    monkeypatch.setenv("LIGHTBOX_HEALTH_PORT", "9443")
    operator_main.main(["--metrics-port", "-1"])
    assert seen["liveness_endpoint"] == "http://0.0.0.0:9443/healthz"


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_health_port_out_of_range_is_refused_naming_it(port):
    with pytest.raises(SystemExit, match="--health-port must be a port number 1-65535"):
        operator_main.liveness_endpoint(port)


def test_health_port_env_not_a_number_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("LIGHTBOX_HEALTH_PORT", "http")
    with pytest.raises(SystemExit, match="LIGHTBOX_HEALTH_PORT must be a port number"):
        operator_main.liveness_endpoint(None)
