"""The isolation probe: silence is isolation, any reply (even a refusal) is not."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from lightbox.sandbox import probe


def test_split_address():
    assert probe.split_address("10.0.0.1:6443", 443) == ("10.0.0.1", 6443)
    assert probe.split_address("https://127.0.0.1:39623", 443) == ("127.0.0.1", 39623)
    assert probe.split_address("https://kubernetes.default", 80) == ("kubernetes.default", 443)
    assert probe.split_address("[::1]:53", 53) == ("::1", 53)
    assert probe.split_address("1.1.1.1", 443) == ("1.1.1.1", 443)


def test_a_listening_port_and_a_refused_port_both_answer():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        assert probe.tcp_check("api-server", f"127.0.0.1:{port}", 443, 1.0).answered
    finally:
        server.close()
    refused = probe.tcp_check("api-server", f"127.0.0.1:{port}", 443, 1.0)
    assert refused.answered and "refused" in refused.detail


def test_a_dns_server_that_replies_answers():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    import threading

    def reply():
        data, addr = server.recvfrom(512)
        server.sendto(data[:2] + b"\x81\x80" + data[4:], addr)

    thread = threading.Thread(target=reply)
    thread.start()
    try:
        assert probe.dns_check(f"127.0.0.1:{port}", 1.0).answered
    finally:
        thread.join(2)
        server.close()


def test_no_network_means_isolated(tmp_path):
    """In a network namespace with no interfaces nothing can answer (needs unshare)."""
    log = tmp_path / "termination"
    result = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-m", "lightbox.sandbox.probe",
         "--api-server", "https://127.0.0.1:6443", "--dns", "10.96.0.10:53", "--outside", "1.1.1.1:443", "--timeout", "1"],
        capture_output=True, text=True, env={"LIGHTBOX_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"}, timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(log.read_text())["isolated"] is True


def test_reachable_means_not_isolated(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    log = tmp_path / "termination"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "lightbox.sandbox.probe", "--api-server", f"127.0.0.1:{server.getsockname()[1]}", "--timeout", "1"],
            capture_output=True, text=True, env={"LIGHTBOX_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"}, timeout=30,
        )
    finally:
        server.close()
    assert result.returncode == 1
    data = json.loads(log.read_text())
    assert data["isolated"] is False and "api-server" in data["answered"][0]
