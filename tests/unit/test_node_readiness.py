"""Readiness of kube-proxy and kube-router, read from iptables-save (devtools/node_config.py).

The dumps (tests/unit/iptables/) are what ``iptables-save`` printed on the real node of this repository once both had
synced (kube-apiserver on 10.77.0.1:54441); the not-yet-ready shapes are those dumps with the
lines a sync writes taken out, as they stand between a component's start and its first sync.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lightbox.devtools import node_config as cfg

DUMPS = Path(__file__).parent / "iptables"
NAT_SYNCED = (DUMPS / "nat-synced.txt").read_text()
FILTER_SYNCED = (DUMPS / "filter-synced.txt").read_text()

SERVICE = {"cluster_ip": "10.0.0.1", "port": 443, "endpoint": "10.77.0.1:54441"}


def _without(dump: str, *needles: str) -> str:
    return "\n".join(line for line in dump.splitlines() if not any(n in line for n in needles)) + "\n"


def test_the_kubernetes_service_is_programmed_once_its_dnat_rule_exists():
    assert cfg.service_programmed(NAT_SYNCED, **SERVICE)


@pytest.mark.parametrize("missing", [
    "-A KUBE-SERVICES -d 10.0.0.1/32",      # no service rule yet
    "-A KUBE-SVC-NPX46M4PTMTKRN6Y",          # the service chain leads nowhere
    "-j DNAT",                               # the endpoint chain does not translate
    "-A ",                                   # kube-proxy created its chains but wrote no rule (before its first sync)
])
def test_a_partial_nat_table_is_not_ready(missing):
    assert not cfg.service_programmed(_without(NAT_SYNCED, missing), **SERVICE)


@pytest.mark.parametrize(("field", "value"), [
    ("endpoint", "10.77.0.1:6443"),   # an API server from an earlier start of the node
    ("cluster_ip", "10.0.0.2"),
    ("port", 80),
])
def test_another_service_or_endpoint_is_not_ours(field, value):
    assert not cfg.service_programmed(NAT_SYNCED, **{**SERVICE, field: value})


def test_kube_router_has_synced_when_every_top_level_chain_ends_in_the_policy_accept():
    assert cfg.policy_sync_done(FILTER_SYNCED)


def test_kube_router_chains_without_a_sync_are_not_ready():
    # kube-router creates its chains and the jumps to them first, then syncs in another goroutine.
    before_sync = _without(FILTER_SYNCED, "rule to explicitly ACCEPT traffic", "-A KUBE-ROUTER-INPUT -d",
                           "-A KUBE-ROUTER-INPUT -p")
    assert ":KUBE-ROUTER-INPUT - [0:0]" in before_sync and "-j KUBE-ROUTER-FORWARD" in before_sync
    assert not cfg.policy_sync_done(before_sync)


@pytest.mark.parametrize("chain", cfg.KUBE_ROUTER_CHAINS)
def test_one_chain_without_the_accept_is_not_a_finished_sync(chain):
    lines = [line for line in FILTER_SYNCED.splitlines()
             if not (line.startswith(f"-A {chain} ") and "0x20000/0x20000 -j ACCEPT" in line)]
    assert not cfg.policy_sync_done("\n".join(lines))


def test_no_kube_router_at_all_is_not_ready():
    assert not cfg.policy_sync_done(_without(FILTER_SYNCED, "KUBE-ROUTER"))
    assert not cfg.policy_sync_done("")


def test_run_containerd_counts_only_when_no_other_containerd_was_running():
    """The tier checks images in private containerds while the node runs: /run/containerd then comes and goes
    with them, so a snapshot taken meanwhile (None) is not compared; two known states still are."""
    from lightbox.devtools import node_host as host

    def state(run_containerd):
        return host.HostState(sysctls={}, chains={}, rules={}, ipsets=[], links=[], netns=[], loopback_addrs=[],
                              run_containerd=run_containerd)

    assert state(True).differences(state(None)) == []
    assert state(None).differences(state(False)) == []
    assert state(True).differences(state(False)) == ["/run/containerd removed"]
    assert state(False).differences(state(True)) == ["/run/containerd added"]
    assert host.HostState.from_json(state(None).to_json()) == state(None)
