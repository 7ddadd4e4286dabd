"""SandboxPolicy: the isolation probe, proving each governed namespace's network is closed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lightbox.api import SandboxPolicy
from lightbox.api import run as layout
from lightbox.api.policy import NamespaceIsolation
from lightbox.operator import builders, clock, outcome
from lightbox.operator.conditions import parse_time, post_event, set_condition
from lightbox.operator.kube import path
from lightbox.operator.lookups import dump, parse_model

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime


def _governs(policy: SandboxPolicy, namespace: str) -> bool:
    return not policy.spec.namespaces or namespace in policy.spec.namespaces


# A probe pod that has not finished this long after its creation never will (never scheduled, never started).
PROBE_GIVE_UP_SECONDS = builders.PROBE_DEADLINE_SECONDS + 60
# A pass while a probe runs, to read its result soon after it ends.
PROBE_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class ProbeReading:
    """The namespace's probe pods read: the latest result, whether it is new, and the probe still running."""

    current: NamespaceIsolation | None
    updated: bool
    pending: dict[str, Any] | None


def read_probes(pods: list[dict[str, Any]], current: NamespaceIsolation | None, now: datetime) -> ProbeReading:
    """Judge the probe pods (oldest first) not judged yet; the newest result wins."""
    updated, pending = False, None
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        if current is not None and current.probe == pod["metadata"]["name"]:
            continue
        result = outcome.probe_result(pod)
        if result is None:
            created = parse_time(pod["metadata"].get("creationTimestamp"))
            if created is None or (now - created).total_seconds() <= PROBE_GIVE_UP_SECONDS:
                pending = pod
                continue
            # Never scheduled or never started: isolation is unproven, which must block runs too.
            phase = (pod.get("status") or {}).get("phase", "Pending")
            result = outcome.ProbeResult(
                False, f"the probe pod did not finish within {PROBE_GIVE_UP_SECONDS} s (phase {phase})"
            )
        current = NamespaceIsolation(
            isolated=result.isolated, checked_at=now, message=result.message, probe=pod["metadata"]["name"]
        )
        updated = True
    return ProbeReading(current, updated, pending)


def leftover_probes(pods: list[dict[str, Any]], reading: ProbeReading) -> list[str]:
    """Probe pods neither running nor holding the current result: they (and their NetworkPolicies) go."""
    current = reading.current
    return [
        pod["metadata"]["name"]
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        if pod is not reading.pending and (current is None or pod["metadata"]["name"] != current.probe)
    ]


def probe_schedule(current: NamespaceIsolation | None, interval: float, now: datetime) -> tuple[float, float | None]:
    """(seconds between probes, seconds since the last one or None when never probed)."""
    checked = current.checked_at if current and current.checked_at else None
    age = (now - checked).total_seconds() if checked else None
    # A failed probe is repeated sooner: the fix (a NetworkPolicy-enforcing CNI) should show quickly.
    due_after = interval if current is None or current.isolated else min(interval, 300)
    return due_after, age


def isolated_condition(isolation: dict[str, NamespaceIsolation]) -> tuple[str, str, str]:
    """(status, reason, message) of the policy's Isolated condition over every namespace probed."""
    bad = sorted(ns for ns, item in isolation.items() if not item.isolated)
    if bad:
        listed = ", ".join(f"{ns} ({isolation[ns].message})" for ns in bad)
        return "False", "NetworkReachable", "not isolated: " + listed
    return "True", "ProbeReachedNothing", "isolation probe reached nothing in " + ", ".join(sorted(isolation))


async def reconcile_policy(runtime: Runtime, name: str) -> float | None:
    raw = await runtime.kube.get(path("sandboxpolicies", None, name))
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        runtime.wake_all()
        return None
    policy = parse_model(SandboxPolicy, raw)
    if policy is None:
        return None
    now = clock.utcnow()
    isolation: dict[str, NamespaceIsolation] = dict((policy.status.isolation or {}) if policy.status else {})
    namespaces = sorted(ns for ns, names in runtime.validations.items() if names and _governs(policy, ns))
    updates: dict[str, NamespaceIsolation] = {}
    delay: float | None = None
    for namespace in namespaces:
        update, wait = await _probe_namespace(runtime, policy, namespace, isolation.get(namespace), now)
        if update is not None:
            updates[namespace] = update
        delay = wait if delay is None else min(delay, wait)
    if updates:
        isolation.update(updates)
        await _record_isolation(runtime, raw, policy, isolation, updates, now)
    return delay


async def _probe_namespace(
    runtime: Runtime, policy: SandboxPolicy, namespace: str, current: NamespaceIsolation | None, now: datetime
) -> tuple[NamespaceIsolation | None, float]:
    """Read the namespace's probes, clear the old ones, start one when due; (new result, seconds to the next look)."""
    kube, config, name = runtime.kube, runtime.config, policy.metadata["name"]
    selector = (
        f"{layout.LABEL_COMPONENT}={builders.COMPONENT_PROBE},{builders.LABEL_POLICY}={builders.label_value(name)}"
    )
    pods = await kube.list(path("pods", namespace), selector)
    reading = read_probes(pods, current, now)
    for pod_name in leftover_probes(pods, reading):
        await kube.delete(path("pods", namespace, pod_name))
        await kube.delete(path("networkpolicies", namespace, pod_name))
    due_after, age = probe_schedule(reading.current, policy.spec.isolation_probe.interval_seconds, now)
    running = reading.pending is not None
    if not running and (age is None or age >= due_after):
        # Restart safety comes from looking for an unfinished probe first (above), not from the name.
        probe = builders.probe_name(name, int(now.timestamp()))
        await kube.create(path("networkpolicies", namespace), builders.probe_network_policy(policy, namespace, probe))
        api_server = config.probe_api_server or runtime.api_server
        await kube.create(path("pods", namespace), builders.probe_pod(policy, namespace, probe, config, api_server))
        running = True
    wait = PROBE_POLL_SECONDS if running else max(1.0, due_after - (age or 0))
    return (reading.current if reading.updated else None), wait


async def _record_isolation(
    runtime: Runtime,
    raw: dict[str, Any],
    policy: SandboxPolicy,
    isolation: dict[str, NamespaceIsolation],
    updates: dict[str, NamespaceIsolation],
    now: datetime,
) -> None:
    name, generation = policy.metadata["name"], raw["metadata"].get("generation")
    before = policy.status.conditions if policy.status else None
    conditions = set_condition(before, "Isolated", *isolated_condition(isolation), now, generation)
    body = {
        "isolation": {ns: dump(item) for ns, item in updates.items()},
        "conditions": [dump(c) for c in conditions],
        "observedGeneration": generation,
    }
    await runtime.kube.patch(path("sandboxpolicies", None, name, "status"), {"status": body})
    runtime.policies = None  # the woken Validations must see the new isolation result
    for namespace, item in updates.items():
        runtime.exporter.record_isolation(namespace, name, item.isolated)
        reason = "NamespaceIsolated" if item.isolated else "NamespaceNotIsolated"
        message = f"namespace {namespace}: {item.message}"
        await post_event(runtime, raw, "Normal" if item.isolated else "Warning", reason, message)
        runtime.wake_namespace(namespace)
