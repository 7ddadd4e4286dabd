"""The controller: Validations, Datasets, Algorithms and SandboxPolicies reconciled against the cluster.

Level-triggered: every pass reads the object, what it depends on and what it
owns (Jobs, Pods) from the API server, and derives the next step from that
alone. Nothing is remembered between passes that the cluster does not also
hold, so a restarted operator picks up exactly where the last one stopped:

* a run's record is written to status (phase Queued, deterministic name)
  *before* its Job is created, and the Job is created only if absent;
* a run's result is derived from its Job and Pod, which outlive the operator,
  and written to status in one patch.

Where things are: ``runtime`` (shared state, workers), ``scheduler`` (queue
order, run slots, GPUs), ``conditions`` (conditions, Events), one module per
kind (``validations``, ``datasets``, ``algorithms``, ``sandboxpolicies``). The
decisions themselves are pure functions in ``runs``, ``outcome``, ``builders``,
``admission`` and ``verdict``; the kind modules do the I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

from lightbox.operator import algorithms, datasets, sandboxpolicies, validations

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime

VALIDATION, DATASET, POLICY, ALGORITHM = "validation", "dataset", "policy", "algorithm"


async def reconcile(runtime: Runtime, key: Hashable) -> float | None:
    """One pass over the object ``key`` names; seconds until the next pass without an event, or None."""
    kind, *rest = key  # type: ignore[misc]
    if kind == VALIDATION:
        return await validations.reconcile_validation(runtime, *rest)
    if kind == DATASET:
        return await datasets.reconcile_dataset(runtime, *rest)
    if kind == POLICY:
        return await sandboxpolicies.reconcile_policy(runtime, *rest)
    if kind == ALGORITHM:
        return await algorithms.reconcile_algorithm(runtime, *rest)
    return None
