"""Algorithm: its Allowed condition under the cluster's SandboxPolicies (and approvals)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lightbox.api import Algorithm, AlgorithmApproval, SandboxPolicy
from lightbox.operator import admission as admission_mod
from lightbox.operator import clock
from lightbox.operator.conditions import post_event, set_condition
from lightbox.operator.kube import path
from lightbox.operator.lookups import dump, load_approvals, load_policies, parse_model

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime


def algorithm_allowed(
    algorithm: Algorithm, policies: list[SandboxPolicy], namespace: str, approvals: Sequence[AlgorithmApproval] = ()
) -> tuple[str, str, str]:
    """(status, reason, message) of an Algorithm's Allowed condition under the cluster's policies."""
    selected = admission_mod.select_policy(policies, namespace)
    if isinstance(selected, admission_mod.Problem):
        return "False", selected.reason, selected.message
    problems = admission_mod.check_algorithm(algorithm, selected, approvals)
    if problems:
        reason = problems[0].reason if len({p.reason for p in problems}) == 1 else "NotAllowed"
        return "False", reason, "; ".join(p.message for p in problems)
    name = selected.metadata.get("name")
    return "True", "PolicyAllows", f"SandboxPolicy {name} allows its registry, resources and timeout"


async def reconcile_algorithm(runtime: Runtime, namespace: str, name: str) -> float | None:
    raw = await runtime.kube.get(path("algorithms", namespace, name))
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        return None
    algorithm = parse_model(Algorithm, raw)
    if algorithm is None:
        return None
    generation = raw["metadata"].get("generation")
    policies = await load_policies(runtime)
    status, reason, message = algorithm_allowed(
        algorithm, policies, namespace, await load_approvals(runtime, namespace, policies)
    )
    current = algorithm.status
    previous = next((c for c in (current.conditions or []) if c.type == "Allowed"), None) if current else None
    if previous and (previous.status, previous.reason, previous.message, previous.observed_generation) == (
        status, reason, message, generation
    ):
        return None  # nothing new; also ends the echo of our own write
    now = clock.utcnow()
    before = current.conditions if current else None
    conditions = set_condition(before, "Allowed", status, reason, message, now, generation)
    body = {
        "conditions": [dump(c) for c in conditions],
        "observedGeneration": generation,
        "lastChecked": now.isoformat().replace("+00:00", "Z"),
    }
    written = await runtime.kube.patch(path("algorithms", namespace, name, "status"), {"status": body})
    runtime.observe("algorithms", namespace, name, written)
    if status == "False":
        await post_event(runtime, raw, "Warning", reason, message)
    return None

