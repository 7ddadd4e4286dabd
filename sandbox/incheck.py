"""The in-pod isolation check: the first thing the ``stage`` step does, so the vendor
container of the same pod starts only once this pod is seen to be cut off.

Why in the pod and not only in the namespace probe: a policy engine protects a pod some
time after the pod gets its address (kube-router: 1-4 s; other engines have such
windows too), so a vendor that connects at once would get out even where the probe
found the namespace isolated. The stage step shares the vendor's network namespace (one
pod, one address, one set of rules), and the vendor, the next init container, can only
start after this step has exited 0. So what this step sees before it exits is what the
vendor gets.

What it tries (``probe.tcp_check``/``probe.dns_check``, one way to do each thing): the API
server (``KUBERNETES_SERVICE_HOST``, set by every kubelet, and the endpoint the operator
uses), the cluster DNS servers, the node (``LIGHTBOX_NODE_IP`` from the downward API,
the kubelet's port), the pod's default gateway (``/proc/net/route``) and the outside
addresses the operator is configured with.

The decision (``decide``), and why it fails closed rather than racing:

- The check runs in rounds, every target in parallel each round. It proceeds only after
  ``clean_rounds`` consecutive rounds in which every target was silent. Any answer resets
  the count, so the vendor starts only after a run of clean rounds, never on a clean
  round that followed an answer alone.
- An answer is not a refusal by itself: answers in the first seconds are exactly the
  window, which every engine has. The check waits for enforcement to arrive.
- At ``bound_seconds`` without that run of clean rounds the run is refused
  (``IsolationNotEnforced``) naming what answered. Time alone never lets the vendor
  start: the only way past this step is silence, observed.
- Several rounds, not one: a single silent round can be luck (a lost SYN, a reply slower
  than the timeout) while nothing is enforced; passing needs that luck on every target
  ``clean_rounds`` times in a row, spaced ``interval_seconds`` apart.
- No targets at all proves nothing, so it refuses; so do GPUs visible to this container,
  which requests none (docs/gpus.md), and any error of the check itself (the stage step
  fails, and the vendor does not start).

What stays outside it: enforcement that regresses after the vendor started (a policy
engine restarted and flushing rules) is the namespace probe's to catch, on its schedule.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from lightbox.api.run import ISOLATION_CHECK_ENV, NODE_IP_ENV, IsolationCheckConfig
from lightbox.sandbox.probe import Check, dns_check, gpu_problem, gpu_view, tcp_check

REASON = "IsolationNotEnforced"
KUBELET_PORT = 10250
API_SERVER_PORT = 443
RTF_GATEWAY = 0x2
ROUTES = Path("/proc/net/route")

Kind = Literal["api-server", "dns", "node", "gateway", "outside"]


@dataclass(frozen=True)
class Target:
    kind: Kind
    address: str


def host_port(host: str, port: int | str) -> str:
    """``host:port``, bracketing an IPv6 host so the port stays separable."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def default_gateways(routes: str) -> list[str]:
    """Gateways of the default routes in ``/proc/net/route`` text (IPv4; the kernel
    prints addresses as little-endian hex)."""
    found: list[str] = []
    for line in routes.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        try:
            destination, gateway, flags = int(fields[1], 16), int(fields[2], 16), int(fields[3], 16)
        except ValueError:
            continue
        if destination == 0 and flags & RTF_GATEWAY and gateway:
            address = socket.inet_ntoa(struct.pack("<I", gateway))
            if address not in found:
                found.append(address)
    return found


def targets(config: IsolationCheckConfig, env: Mapping[str, str], routes: str) -> list[Target]:
    """Everything the vendor must not reach, from the config, the pod's environment and its routes."""
    out: list[Target] = []

    def add(kind: Kind, address: str | None) -> None:
        if address and Target(kind, address) not in out:
            out.append(Target(kind, address))

    if env.get("KUBERNETES_SERVICE_HOST"):
        add("api-server", host_port(env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT") or API_SERVER_PORT))
    add("api-server", config.api_server)
    for server in config.dns:
        add("dns", server)
    if env.get(NODE_IP_ENV):
        add("node", host_port(env[NODE_IP_ENV], KUBELET_PORT))
    for gateway in default_gateways(routes):
        add("gateway", host_port(gateway, KUBELET_PORT))
    for address in config.outside:
        add("outside", address)
    return out


def check_target(target: Target, timeout: float) -> Check:
    """One attempt; an error of the check itself counts as an answer (fail closed)."""
    try:
        if target.kind == "dns":
            return dns_check(target.address, timeout)
        return tcp_check(target.kind, target.address, API_SERVER_PORT, timeout)
    except Exception as exc:  # noqa: BLE001 - anything unexpected must stop the run, not pass it
        return Check(target.address, target.kind, True, f"check failed: {type(exc).__name__}: {exc}")


def probe_round(checks: Sequence[Target], timeout: float) -> list[Check]:
    with ThreadPoolExecutor(max_workers=max(1, len(checks))) as pool:
        return list(pool.map(lambda t: check_target(t, timeout), checks))


@dataclass(frozen=True)
class Decision:
    action: Literal["proceed", "wait", "refuse"]
    message: str


def _describe(checks: Sequence[Check]) -> str:
    return ", ".join(f"{c.kind} {c.target} ({c.detail})" for c in checks)


def decide(rounds: Sequence[Sequence[Check]], elapsed: float, config: IsolationCheckConfig) -> Decision:
    """Proceed after ``clean_rounds`` consecutive silent rounds; refuse at the bound; else wait."""
    if not rounds:
        return Decision("wait", "no round yet")
    if any(not r for r in rounds):
        return Decision("refuse", "nothing to check: no API server, DNS, node, gateway or outside address is known")
    streak = 0
    for checks in reversed(rounds):
        if any(c.answered for c in checks):
            break
        streak += 1
    if streak >= config.clean_rounds:
        return Decision("proceed", f"{len(rounds[-1])} targets silent in {streak} consecutive rounds")
    if elapsed < config.bound_seconds:
        return Decision("wait", f"{streak} of {config.clean_rounds} clean rounds")
    answered = next(([c for c in checks if c.answered] for checks in reversed(rounds) if any(c.answered for c in checks)), [])
    silent = f"silent for only {streak} of {config.clean_rounds} rounds"
    if not answered:
        return Decision("refuse", f"the bound of {config.bound_seconds:g} s passed with the network {silent}")
    tail = f"; then {silent}" if streak else ""
    return Decision(
        "refuse",
        f"the network answered from inside the run pod until the bound of {config.bound_seconds:g} s: "
        f"{_describe(answered)}{tail}; NetworkPolicies are not enforced for this pod",
    )


def run_rounds(
    checks: Sequence[Target],
    config: IsolationCheckConfig,
    *,
    probe: Callable[[Sequence[Target], float], list[Check]] = probe_round,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = lambda line: None,
) -> Decision:
    """Round after round until ``decide`` proceeds or refuses."""
    start = clock()
    rounds: list[list[Check]] = []
    while True:
        rounds.append(probe(checks, config.timeout_seconds) if checks else [])
        decision = decide(rounds, clock() - start, config)
        answered = [c for c in rounds[-1] if c.answered]
        log(f"round {len(rounds)}: {len(answered)} of {len(rounds[-1])} answered{': ' + _describe(answered) if answered else ''}")
        if decision.action != "wait":
            return decision
        sleep(config.interval_seconds)


def check_pod(
    config: IsolationCheckConfig,
    env: Mapping[str, str],
    *,
    routes: str,
    root: Path = Path("/"),
    probe: Callable[[Sequence[Target], float], list[Check]] = probe_round,
    log: Callable[[str], None] = lambda line: None,
) -> Decision:
    """GPUs first (static: no window to wait for), then the network rounds."""
    gpus = gpu_problem(gpu_view(root), config.gpus_allowed)
    if gpus:
        return Decision("refuse", f"{gpus}; a vendor image could do the same")
    return run_rounds(targets(config, env, routes), config, probe=probe, log=log)


def _stderr(line: str) -> None:
    print(f"lightbox stage: isolation check: {line}", file=sys.stderr, flush=True)


def run_from_environment(env: Mapping[str, str] | None = None) -> str | None:
    """The stage step's entry: None to go on, or why the run must stop.

    It runs inside any Kubernetes pod (``KUBERNETES_SERVICE_HOST`` is set by every
    kubelet) or whenever the operator's settings are present, so a pod built without the
    settings is still checked; only a step started by hand outside a pod skips it.
    """
    env = os.environ if env is None else env
    raw = env.get(ISOLATION_CHECK_ENV, "").strip()
    if not raw and not env.get("KUBERNETES_SERVICE_HOST"):
        return None
    try:
        config = IsolationCheckConfig.model_validate(json.loads(raw) if raw else {})
    except (ValueError, ValidationError) as exc:
        return f"{ISOLATION_CHECK_ENV} is not valid: {exc}"
    try:
        routes = ROUTES.read_text()
    except OSError:
        routes = ""
    decision = check_pod(config, env, routes=routes, log=_stderr)
    _stderr(f"{decision.action}: {decision.message}")
    return None if decision.action == "proceed" else decision.message
