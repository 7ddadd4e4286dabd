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
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from lightbox.api.run import ISOLATION_CHECK_ENV, IsolationCheckConfig
from lightbox.sandbox.probe import (
    Check,
    Target,
    check_all,
    check_target,
    default_gateways,
    gpu_problem,
    gpu_view,
    pod_targets,
    read_routes,
)

__all__ = [
    "REASON",
    "Decision",
    "Target",
    "check_pod",
    "check_target",
    "decide",
    "default_gateways",
    "run_from_environment",
    "run_rounds",
    "targets",
]

REASON = "IsolationNotEnforced"


def targets(config: IsolationCheckConfig, env: Mapping[str, str], routes: str) -> list[Target]:
    """The probe's target list (``probe.pod_targets``) from the operator's settings."""
    return pod_targets([config.api_server], config.dns, config.outside, env, routes)


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
    answered = next(
        ([c for c in checks if c.answered] for checks in reversed(rounds) if any(c.answered for c in checks)), []
    )
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
    probe: Callable[[Sequence[Target], float], list[Check]] = check_all,
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
        log(
            f"round {len(rounds)}: {len(answered)} of {len(rounds[-1])} "
            f"answered{': ' + _describe(answered) if answered else ''}"
        )
        if decision.action != "wait":
            return decision
        sleep(config.interval_seconds)


def check_pod(
    config: IsolationCheckConfig,
    env: Mapping[str, str],
    *,
    routes: str,
    root: Path = Path("/"),
    probe: Callable[[Sequence[Target], float], list[Check]] = check_all,
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
    decision = check_pod(config, env, routes=read_routes(), log=_stderr)
    _stderr(f"{decision.action}: {decision.message}")
    return None if decision.action == "proceed" else decision.message
