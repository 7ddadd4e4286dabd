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
        [
            "unshare",
            "--net",
            "--",
            sys.executable,
            "-m",
            "lightbox.sandbox.probe",
            "--api-server",
            "https://127.0.0.1:6443",
            "--dns",
            "10.96.0.10:53",
            "--outside",
            "1.1.1.1:443",
            "--timeout",
            "1",
            "--interval",
            "0",
        ],
        capture_output=True,
        text=True,
        env={"LIGHTBOX_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"},
        timeout=30,
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
            # This one runs in the host's network: no route table, so the host's gateway is not tried.
            [
                sys.executable,
                "-m",
                "lightbox.sandbox.probe",
                "--api-server",
                f"127.0.0.1:{server.getsockname()[1]}",
                "--timeout",
                "1",
                "--routes",
                "/dev/null",
                "--interval",
                "0.1",
                "--bound",
                "1",
            ],
            capture_output=True,
            text=True,
            env={"LIGHTBOX_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"},
            timeout=30,
        )
    finally:
        server.close()
    assert result.returncode == 1
    data = json.loads(log.read_text())
    assert data["isolated"] is False and "api-server" in data["answered"][0]


def _probe_in_new_netns(tmp_path, setup: str, *args: str):
    import os
    import shutil

    import pytest

    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("needs root and iptables to build a network namespace with a REJECT rule")
    log = tmp_path / "termination"
    result = subprocess.run(
        [
            "unshare",
            "--net",
            "--",
            "sh",
            "-c",
            f'set -e\n{setup}\nexec "$@"',
            "sh",
            sys.executable,
            "-m",
            "lightbox.sandbox.probe",
            *args,
        ],
        capture_output=True,
        text=True,
        env={"LIGHTBOX_TERMINATION_LOG": str(log), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        timeout=60,
    )
    return result, json.loads(log.read_text())


REJECT_PORT_1 = "ip link set lo up && iptables -A OUTPUT -p tcp -d 127.0.0.1 --dport 1 -j REJECT"


def test_a_packet_filters_icmp_reject_is_not_an_answer(tmp_path):
    """kube-router's deny: REJECT, i.e. ICMP port-unreachable. No TCP stack answers a SYN
    with ICMP, so the SYN died in the filter: isolated."""
    result, data = _probe_in_new_netns(
        tmp_path, REJECT_PORT_1, "--api-server", "127.0.0.1:1", "--timeout", "1", "--interval", "0"
    )
    assert result.returncode == 0, result.stdout
    assert data["isolated"] is True
    check = json.loads(result.stdout)["checks"][0]
    assert check["answered"] is False and "packet filter at 127.0.0.1" in check["detail"]


def test_without_the_filter_the_same_address_answers_with_a_reset(tmp_path):
    result, data = _probe_in_new_netns(tmp_path, "ip link set lo up", "--api-server", "127.0.0.1:1", "--timeout", "1",
                                       "--interval", "0.1", "--bound", "1")
    assert result.returncode == 1
    assert "TCP reset" in data["answered"][0]


def test_an_outside_host_rejecting_for_itself_was_reached(tmp_path):
    """The ICMP came from the outside address itself: packets got there."""
    result, data = _probe_in_new_netns(tmp_path, REJECT_PORT_1, "--outside", "127.0.0.1:1", "--timeout", "1",
                                       "--interval", "0.1", "--bound", "1")
    assert result.returncode == 1
    assert "outside 127.0.0.1:1" in data["answered"][0] and "itself" in data["answered"][0]


def test_gpus_visible_to_the_probe_mean_not_isolated(tmp_path):
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    for name in ("nvidia0", "nvidia1", "nvidiactl"):
        (root / "dev" / name).touch()
    log = tmp_path / "termination"
    result = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-m", "lightbox.sandbox.probe", "--api-server", "127.0.0.1:1",
         "--timeout", "1", "--root", str(root)],
        capture_output=True, text=True, env={"LIGHTBOX_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin"}, timeout=30,
    )
    assert result.returncode == 1
    data = json.loads(log.read_text())
    assert (
        data["isolated"] is False
        and data["answered"] == [data["answered"][0]]
        and "gpus: 2 visible" in data["answered"][0]
    )


def test_the_probe_tries_the_node_and_the_gateway_too(tmp_path):
    """Same targets as the in-pod check: the node from the downward API, the gateway from the
    route table (here a file: a default route via 127.0.0.2, little-endian hex 0200007F)."""
    routes = tmp_path / "route"
    routes.write_text("Iface\tDestination\tGateway\tFlags\nlo\t00000000\t0200007F\t0003\n")
    log = tmp_path / "termination"
    result = subprocess.run(
        [
            "unshare",
            "--net",
            "--",
            sys.executable,
            "-m",
            "lightbox.sandbox.probe",
            "--timeout",
            "1",
            "--routes",
            str(routes),
            "--interval",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={"LIGHTBOX_TERMINATION_LOG": str(log), "PATH": "/usr/bin:/bin", "LIGHTBOX_NODE_IP": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {(c["kind"], c["target"]) for c in json.loads(result.stdout)["checks"]}
    assert checks == {("node", "127.0.0.1:10250"), ("gateway", "127.0.0.2:10250")}


# The first two SYNs to port 1 pass (a TCP reset answers them: 60-byte SYNs within a 120-byte
# quota), every later one is REJECTed: a policy engine arriving after the pod got its address,
# as kube-router does 1-4 s later, counted in packets instead of seconds so the test has no clock.
WINDOW_THEN_REJECT = (
    "ip link set lo up && iptables -A OUTPUT -p tcp -d 127.0.0.1 --dport 1 -m quota --quota 120 -j ACCEPT"
    " && iptables -A OUTPUT -p tcp -d 127.0.0.1 --dport 1 -j REJECT"
)


def test_answers_in_the_policy_engines_window_then_clean_rounds_mean_isolated(tmp_path):
    """A single try would report the window (the probe pod's own first seconds) as an open namespace."""
    result, data = _probe_in_new_netns(tmp_path, WINDOW_THEN_REJECT, "--api-server", "127.0.0.1:1", "--timeout", "1",
                                       "--clean-rounds", "3", "--interval", "0", "--bound", "60")
    out = json.loads(result.stdout)
    assert result.returncode == 0 and data["isolated"] is True, result.stdout + result.stderr
    assert out["rounds"] == 2 + 3   # two answered rounds, then three silent ones in a row


def test_clean_rounds_that_never_come_by_the_bound_mean_not_isolated(tmp_path):
    result, data = _probe_in_new_netns(tmp_path, "ip link set lo up", "--api-server", "127.0.0.1:1", "--timeout", "1",
                                       "--clean-rounds", "2", "--interval", "0.2", "--bound", "1.5")
    assert result.returncode == 1 and data["isolated"] is False
    assert data["answered"] == ["api-server 127.0.0.1:1 (connection refused with a TCP reset (a host replied))"]
    assert json.loads(result.stdout)["rounds"] >= 2


def test_round_settings_out_of_range_are_refused_naming_the_option(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lightbox.sandbox.probe", "--clean-rounds", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "--clean-rounds: Input should be greater than or equal to 1" in result.stderr, result.stderr
