"""The controller: Validations, Datasets, Algorithms and SandboxPolicies reconciled against the cluster.

Level-triggered: every pass reads the object, what it depends on and what it
owns (Jobs, Pods) from the API server, and derives the next step from that
alone. Nothing is remembered between passes that the cluster does not also
hold, so a restarted operator picks up exactly where the last one stopped:

* a run's record is written to status (phase Queued, deterministic name)
  *before* its Job is created, and the Job is created only if absent;
* a run's result is derived from its Job and Pod, which outlive the operator,
  and written to status in one patch.

Where things are: ``runtime`` (shared state, workers), ``workqueue`` and
``keys`` (what is to be looked at, with backoff), ``scheduler`` (queue order,
run slots, GPUs), ``conditions`` (conditions, Events), one module per kind
(``validations``, ``datasets``, ``algorithms``, ``sandboxpolicies``). The
decisions themselves are pure functions in ``runs``, ``outcome``, ``builders``,
``admission`` and ``verdict``; the kind modules do the I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_never

from lightbox.operator import algorithms, datasets, sandboxpolicies, validations
from lightbox.operator.keys import AlgorithmKey, DatasetKey, Key, PolicyKey, ValidationKey

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime


async def reconcile(runtime: Runtime, key: Key) -> float | None:
    """One pass over the object ``key`` names; seconds until the next pass without an event, or None."""
    match key:
        case ValidationKey(namespace, name):
            return await validations.reconcile_validation(runtime, namespace, name)
        case DatasetKey(namespace, name):
            return await datasets.reconcile_dataset(runtime, namespace, name)
        case AlgorithmKey(namespace, name):
            return await algorithms.reconcile_algorithm(runtime, namespace, name)
        case PolicyKey(name):
            return await sandboxpolicies.reconcile_policy(runtime, name)
        case _:
            assert_never(key)
