"""The stage step's in-pod isolation check: its targets, its decision over rounds of
answers and silence, the GPUs it counts, and the step refusing before it stages anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightbox.api.run import EXIT_ISOLATION_NOT_ENFORCED, ISOLATION_CHECK_ENV, NODE_IP_ENV, IsolationCheckConfig
from lightbox.sandbox import incheck
from lightbox.sandbox.incheck import Decision, Target, decide, default_gateways, run_rounds, targets
from lightbox.sandbox.probe import Check, gpu_problem, gpu_view

# /proc/net/route of a pod on a bridge CNI, written out by hand: eth0's subnet 10.244.1.0/24
# (no gateway) and the default route via 10.244.1.1. The kernel prints each address as
# the little-endian hex of its 32 bits: 10.244.1.1 -> bytes 0a f4 01 01 -> "0101F40A".
ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101F40A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


def silent(target: str = "10.96.0.1:443", kind: str = "api-server") -> Check:
    return Check(target, kind, False, "no answer")


def answer(target: str = "10.96.0.1:443", kind: str = "api-server") -> Check:
    return Check(target, kind, True, "TCP connection established")


CONFIG = IsolationCheckConfig(clean_rounds=3, bound_seconds=30, interval_seconds=1)


# --- targets -------------------------------------------------------------------------


def test_the_default_gateway_is_read_from_the_route_table():
    assert default_gateways(ROUTES) == ["10.244.1.1"]


def test_routes_without_a_gateway_flag_or_not_default_give_no_gateway():
    # Calico-style point-to-point default route without RTF_GATEWAY, and a bare subnet route.
    routes = ROUTES.splitlines()[0] + "\neth0\t00000000\t0101FEA9\t0001\t0\t0\t0\t00000000\t0\t0\t0\n"
    assert default_gateways(routes) == []
    assert default_gateways("") == []
    assert default_gateways(ROUTES.splitlines()[0] + "\ngarbage line here\n") == []


def test_targets_come_from_the_kubelet_env_the_downward_api_the_routes_and_the_config():
    config = IsolationCheckConfig(
        api_server="https://192.0.2.10:6443", dns=["10.96.0.10:53"], outside=["192.0.2.99:443"]
    )
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", NODE_IP_ENV: "192.0.2.7"}
    assert targets(config, env, ROUTES) == [
        Target("api-server", "10.96.0.1:443"),
        Target("api-server", "https://192.0.2.10:6443"),
        Target("dns", "10.96.0.10:53"),
        Target("node", "192.0.2.7:10250"),
        Target("gateway", "10.244.1.1:10250"),
        Target("outside", "192.0.2.99:443"),
    ]


def test_an_ipv6_node_address_keeps_its_port_separable():
    found = targets(IsolationCheckConfig(), {NODE_IP_ENV: "fd00::7", "KUBERNETES_SERVICE_HOST": "fd00::1"}, "")
    assert found == [Target("api-server", "[fd00::1]:443"), Target("node", "[fd00::7]:10250")]


def test_the_same_target_is_tried_once():
    config = IsolationCheckConfig(dns=["10.96.0.10:53", "10.96.0.10:53"])
    assert targets(config, {}, "") == [Target("dns", "10.96.0.10:53")]


# --- the decision ----------------------------------------------------------------------


def test_answers_then_enough_silence_proceeds():
    rounds = [
        [answer(), silent()],
        [answer(), silent()],
        [silent(), silent()],
        [silent(), silent()],
        [silent(), silent()],
    ]
    assert decide(rounds, elapsed=5, config=CONFIG).action == "proceed"


def test_silence_short_of_the_clean_rounds_waits():
    rounds = [[answer()], [silent()], [silent()]]
    assert decide(rounds, elapsed=3, config=CONFIG).action == "wait"


def test_an_answer_resets_the_count_of_clean_rounds():
    rounds = [[silent()], [silent()], [answer()], [silent()], [silent()]]
    assert decide(rounds, elapsed=5, config=CONFIG).action == "wait"


def test_answers_until_the_bound_refuse_naming_what_answered():
    rounds = [[answer(), silent("10.96.0.10:53", "dns")]] * 4
    result = decide(rounds, elapsed=30, config=CONFIG)
    assert result.action == "refuse"
    assert "api-server 10.96.0.1:443 (TCP connection established)" in result.message
    assert "dns" not in result.message.split(":")[0]  # the silent target is not named as answering
    assert "10.96.0.10" not in result.message


def test_enforcement_that_arrives_too_late_for_the_clean_rounds_still_refuses():
    rounds = [[answer()], [answer()], [silent()]]
    result = decide(rounds, elapsed=31, config=CONFIG)
    assert result.action == "refuse"
    assert "silent for only 1 of 3 rounds" in result.message


def test_silence_alone_never_proceeds_by_time():
    # One round took the whole bound (every target timed out slowly): not enough evidence.
    result = decide([[silent()]], elapsed=45, config=CONFIG)
    assert result.action == "refuse"
    assert "silent for only 1 of 3 rounds" in result.message


def test_nothing_to_check_refuses():
    assert decide([[]], elapsed=0, config=CONFIG).action == "refuse"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def scripted(clock: Clock, script: list[list[Check]], seconds_per_round: float = 1.0):
    calls: list[int] = []

    def probe(checks, timeout):
        calls.append(len(checks))
        clock.now += seconds_per_round
        return script[min(len(calls) - 1, len(script) - 1)]

    return probe, calls


def test_rounds_run_until_the_window_closes_then_proceed():
    clock = Clock()
    probe, calls = scripted(clock, [[answer()], [answer()], [silent()], [silent()], [silent()], [answer()]])
    result = run_rounds([Target("api-server", "10.96.0.1:443")], CONFIG, probe=probe, clock=clock, sleep=clock.sleep)
    assert result.action == "proceed"
    assert len(calls) == 5  # two answering rounds, then three clean ones; never the sixth


def test_rounds_that_keep_answering_stop_at_the_bound():
    clock = Clock()
    probe, calls = scripted(clock, [[answer()]])
    result = run_rounds([Target("api-server", "10.96.0.1:443")], CONFIG, probe=probe, clock=clock, sleep=clock.sleep)
    assert result.action == "refuse"
    # Each round costs 1 s of probing and 1 s of pause: the round that crosses 30 s is the 16th.
    assert len(calls) == 16


def test_no_targets_refuses_without_probing():
    clock = Clock()
    probe, calls = scripted(clock, [[silent()]])
    assert run_rounds([], CONFIG, probe=probe, clock=clock, sleep=clock.sleep).action == "refuse"
    assert calls == []


def test_a_check_that_fails_counts_as_an_answer():
    result = incheck.check_target(Target("api-server", "10.0.0.1:notaport"), 0.1)
    assert result.answered and "check failed" in result.detail


# --- GPUs ---------------------------------------------------------------------------------


def fake_tree(root: Path, devices: list[str], listed: list[str] = ()) -> Path:
    (root / "dev").mkdir(parents=True)
    for name in devices:
        (root / "dev" / name).touch()
    gpus = root / "proc" / "driver" / "nvidia" / "gpus"
    gpus.mkdir(parents=True)
    for name in listed:
        (gpus / name).mkdir()
    return root


def test_gpu_device_nodes_are_counted_and_control_nodes_are_not(tmp_path):
    root = fake_tree(
        tmp_path,
        ["nvidia0", "nvidia1", "nvidia10", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "null"],
    )
    assert gpu_view(root).count == 3


def test_more_gpus_than_requested_refuses(tmp_path):
    root = fake_tree(tmp_path, ["nvidia0", "nvidia1", "nvidiactl"], ["0000:3b:00.0", "0000:af:00.0"])
    problem = gpu_problem(gpu_view(root), allowed=0)
    assert problem is not None and "2 visible" in problem and "/dev/nvidia0" in problem
    assert gpu_problem(gpu_view(root), allowed=2) is None


def test_a_driver_listing_without_device_nodes_is_not_access(tmp_path):
    # A CPU-only container on a GPU node: /proc/driver/nvidia shows the node's GPUs, /dev has none.
    root = fake_tree(tmp_path, ["null", "zero"], ["0000:3b:00.0", "0000:af:00.0"])
    assert gpu_view(root).listed == ("0000:3b:00.0", "0000:af:00.0")
    assert gpu_problem(gpu_view(root), allowed=0) is None


def test_no_dev_tree_means_no_gpus(tmp_path):
    assert gpu_view(tmp_path / "missing").count == 0


def test_gpus_refuse_the_pod_before_any_network_round(tmp_path):
    root = fake_tree(tmp_path, ["nvidia0"])
    rounds: list[int] = []

    def probe(checks, timeout):
        rounds.append(1)
        return [silent()]

    result = incheck.check_pod(CONFIG, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, routes="", root=root, probe=probe)
    assert result.action == "refuse" and "gpus: 1 visible" in result.message
    assert rounds == []


# --- when it runs -----------------------------------------------------------------------


def test_outside_a_pod_and_without_settings_the_step_skips_the_check(monkeypatch):
    monkeypatch.setattr(incheck, "check_pod", lambda *a, **k: pytest.fail("must not run"))
    assert incheck.run_from_environment({}) is None


def test_in_any_pod_the_check_runs_even_without_the_operators_settings(monkeypatch):
    seen = []

    def fake(config, env, **kwargs):
        seen.append(config)
        return Decision("refuse", "api-server answered")

    monkeypatch.setattr(incheck, "check_pod", fake)
    assert incheck.run_from_environment({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}) == "api-server answered"
    assert seen == [IsolationCheckConfig()]


def test_bad_settings_refuse_rather_than_skip(monkeypatch):
    monkeypatch.setattr(incheck, "check_pod", lambda *a, **k: pytest.fail("must not run"))
    refused = incheck.run_from_environment({ISOLATION_CHECK_ENV: '{"cleanRounds": 0}'})
    assert refused is not None and ISOLATION_CHECK_ENV in refused


# --- the stage step, in network namespaces this test creates --------------------------------


def _in_new_netns(command: list[str], env: dict[str, str], setup: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a fresh network namespace whose loopback is up (so 127.0.0.1
    answers) or, with no ``setup``, down; no route leaves it either way."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a network namespace")
    script = f'set -e\n{setup}\nexec "$@"'
    return subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", script, "sh", *command],
        capture_output=True, text=True, env=env, timeout=120,
    )


def _stage_env(tmp_path: Path, config: IsolationCheckConfig) -> dict[str, str]:
    (tmp_path / "studies").mkdir(exist_ok=True)
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        ISOLATION_CHECK_ENV: config.model_dump_json(by_alias=True),
        "LIGHTBOX_STUDIES_DIR": str(tmp_path / "studies"),
        "LIGHTBOX_INPUT_DIR": str(tmp_path / "input"),
        "LIGHTBOX_WORK_DIR": str(tmp_path / "work"),
        "LIGHTBOX_TERMINATION_LOG": str(tmp_path / "termination"),
        "LIGHTBOX_STAGER_CONFIG": '{"task": "classification"}',
    }


FAST = dict(clean_rounds=2, interval_seconds=0, bound_seconds=2, timeout_seconds=0.5)


def test_the_stage_step_refuses_when_the_api_server_address_answers(tmp_path):
    """Loopback up in our own namespace: 127.0.0.1:1 refuses with a reset, a host's answer."""
    config = IsolationCheckConfig(api_server="127.0.0.1:1", **FAST)
    result = _in_new_netns(
        [sys.executable, "-m", "lightbox", "stage"], _stage_env(tmp_path, config), "ip link set lo up"
    )
    assert result.returncode == EXIT_ISOLATION_NOT_ENFORCED, result.stderr
    message = json.loads((tmp_path / "termination").read_text())
    assert message["reason"] == "IsolationNotEnforced"
    assert "api-server 127.0.0.1:1 (connection refused with a TCP reset" in message["message"]
    assert not (tmp_path / "input").exists()  # nothing was staged for a vendor


def test_the_stage_step_proceeds_where_nothing_answers(tmp_path):
    """Loopback down: every target is unreachable; the step goes on to staging (and then
    fails for its own reason: the studies folder is empty)."""
    config = IsolationCheckConfig(api_server="127.0.0.1:1", dns=["127.0.0.1:53"], **FAST)
    result = _in_new_netns([sys.executable, "-m", "lightbox", "stage"], _stage_env(tmp_path, config))
    assert result.returncode != EXIT_ISOLATION_NOT_ENFORCED, result.stderr
    assert json.loads((tmp_path / "termination").read_text())["reason"] != "IsolationNotEnforced"
    assert "isolation check: proceed" in result.stderr


def test_a_filter_that_rejects_with_icmp_counts_as_enforcement(tmp_path):
    """kube-router rejects a pod's denied packets with ICMP port-unreachable. The same
    rule in our namespace: the API server address is silent, the step proceeds."""
    if shutil.which("iptables") is None:
        pytest.skip("needs iptables")
    config = IsolationCheckConfig(api_server="127.0.0.1:1", **FAST)
    reject = "ip link set lo up && iptables -A OUTPUT -p tcp -d 127.0.0.1 --dport 1 -j REJECT"
    result = _in_new_netns([sys.executable, "-m", "lightbox", "stage"], _stage_env(tmp_path, config), reject)
    assert result.returncode != EXIT_ISOLATION_NOT_ENFORCED, result.stderr
    assert "isolation check: proceed" in result.stderr


def test_policy_arriving_after_the_first_answers_lets_the_run_proceed(tmp_path):
    """The window: the REJECT rule appears only after the check has started and seen
    answers; the check waits for it instead of refusing."""
    if shutil.which("iptables") is None:
        pytest.skip("needs iptables")
    config = IsolationCheckConfig(
        api_server="127.0.0.1:1", clean_rounds=3, interval_seconds=0.3, bound_seconds=30, timeout_seconds=0.5
    )
    flag = tmp_path / "answered"
    # The rule goes in once the step's log shows an answering round.
    setup = (
        "set -e\nip link set lo up\n"
        f"( while ! grep -q '1 of 1 answered' {flag} 2>/dev/null; do sleep 0.1; done; "
        "iptables -A OUTPUT -p tcp -d 127.0.0.1 --dport 1 -j REJECT ) &\n"
        f'exec 2> >(tee {flag} >&2)'
    )
    env = _stage_env(tmp_path, config)
    result = (
        subprocess.run(
            [
                "unshare",
                "--net",
                "--",
                "bash",
                "-c",
                f'{setup}\nexec "$@"',
                "bash",
                sys.executable,
                "-m",
                "lightbox",
                "stage",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if os.geteuid() == 0 and shutil.which("bash")
        else pytest.skip("needs root and bash")
    )
    assert "1 of 1 answered" in result.stderr  # the window was seen...
    assert "isolation check: proceed" in result.stderr, result.stderr  # ...and waited out
    assert result.returncode != EXIT_ISOLATION_NOT_ENFORCED
