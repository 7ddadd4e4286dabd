"""SandboxPolicy: the isolation probe, proving each governed namespace's network is closed."""

from __future__ import annotations

from typing import TYPE_CHECKING

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


async def reconcile_policy(runtime: Runtime, name: str) -> float | None:
    kube, config = runtime.kube, runtime.config
    raw = await kube.get(path("sandboxpolicies", None, name))
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        runtime.wake_all()
        return None
    policy = parse_model(SandboxPolicy, raw)
    if policy is None:
        return None
    now = clock.utcnow()
    interval = policy.spec.isolation_probe.interval_seconds
    isolation: dict[str, NamespaceIsolation] = dict((policy.status.isolation or {}) if policy.status else {})
    namespaces = sorted(ns for ns, names in runtime.validations.items() if names and _governs(policy, ns))
    updates: dict[str, NamespaceIsolation] = {}
    delay: float | None = None
    selector = f"{layout.LABEL_COMPONENT}={builders.COMPONENT_PROBE},{builders.LABEL_POLICY}={builders.label_value(name)}"
    for namespace in namespaces:
        current = isolation.get(namespace)
        pods = await kube.list(path("pods", namespace), selector)
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        pending = None
        for pod in pods:
            if current is not None and current.probe == pod["metadata"]["name"]:
                continue
            result = outcome.probe_result(pod)
            if result is None:
                created = parse_time(pod["metadata"].get("creationTimestamp"))
                limit = builders.PROBE_DEADLINE_SECONDS + 60
                if created is None or (now - created).total_seconds() <= limit:
                    pending = pod
                    continue
                # Never scheduled or never started: isolation is unproven, which must block runs too.
                phase = (pod.get("status") or {}).get("phase", "Pending")
                result = outcome.ProbeResult(False, f"the probe pod did not finish within {limit} s (phase {phase})")
            current = NamespaceIsolation(
                isolated=result.isolated, checked_at=now, message=result.message, probe=pod["metadata"]["name"]
            )
            updates[namespace] = current
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            if pod is not pending and (current is None or pod_name != current.probe):
                await kube.delete(path("pods", namespace, pod_name))
                await kube.delete(path("networkpolicies", namespace, pod_name))
        checked = current.checked_at if current and current.checked_at else None
        age = (now - checked).total_seconds() if checked else None
        # A failed probe is repeated sooner: the fix (a NetworkPolicy-enforcing CNI) should show quickly.
        due_after = interval if current is None or current.isolated else min(interval, 300)
        if pending is None and (age is None or age >= due_after):
            # Restart safety comes from looking for an unfinished probe first (above), not from the name.
            probe = builders.probe_name(name, int(now.timestamp()))
            await kube.create(path("networkpolicies", namespace), builders.probe_network_policy(policy, namespace, probe))
            await kube.create(
                path("pods", namespace),
                builders.probe_pod(policy, namespace, probe, config, config.probe_api_server or runtime.api_server),
            )
            pending = True  # type: ignore[assignment]
        wait = 5.0 if pending is not None else max(1.0, due_after - (age or 0))
        delay = wait if delay is None else min(delay, wait)

    if updates:
        isolation.update(updates)
        bad = sorted(ns for ns, item in isolation.items() if not item.isolated)
        if bad:
            cond = ("False", "NetworkReachable", "not isolated: " + ", ".join(f"{ns} ({isolation[ns].message})" for ns in bad))
        else:
            cond = ("True", "ProbeReachedNothing", "isolation probe reached nothing in " + ", ".join(sorted(isolation)))
        conditions = set_condition(policy.status.conditions if policy.status else None, "Isolated", *cond, now, raw["metadata"].get("generation"))
        body = {
            "isolation": {ns: dump(item) for ns, item in updates.items()},
            "conditions": [dump(c) for c in conditions],
            "observedGeneration": raw["metadata"].get("generation"),
        }
        await kube.patch(path("sandboxpolicies", None, name, "status"), {"status": body})
        runtime.policies = None  # the woken Validations must see the new isolation result
        for namespace, item in updates.items():
            runtime.exporter.record_isolation(namespace, name, item.isolated)
            message = f"namespace {namespace}: {item.message}"
            await post_event(runtime, raw, "Normal" if item.isolated else "Warning",
                             "NamespaceIsolated" if item.isolated else "NamespaceNotIsolated", message)
            runtime.wake_namespace(namespace)
    return delay
