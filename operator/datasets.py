"""Dataset: verified by a trusted Job before any run may read it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightbox.api import Dataset
from lightbox.operator import builders, clock, outcome
from lightbox.operator.conditions import post_event, set_condition
from lightbox.operator.kube import path
from lightbox.operator.lookups import JOB_NAME_LABEL, dump, parse_model, pods_by_job

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime


async def reconcile_dataset(runtime: Runtime, namespace: str, name: str) -> float | None:
    kube = runtime.kube
    raw = await kube.get(path("datasets", namespace, name))
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        runtime.wake_namespace(namespace)
        return None
    dataset = parse_model(Dataset, raw)
    if dataset is None:
        return None
    generation = raw["metadata"].get("generation", 1)
    status = dataset.status
    if status is not None and status.observed_generation == generation and status.phase in {"Verified", "Rejected", "Error"}:
        return None
    now = clock.utcnow()
    job_name = builders.verify_job_name(name, generation)
    job = await kube.get(path("jobs", namespace, job_name))
    if job is None:
        await kube.create(path("networkpolicies", namespace), builders.verify_network_policy(dataset, job_name))
        job, _ = await kube.create(path("jobs", namespace), builders.verify_job(dataset, job_name, runtime.config))
    pods = await kube.list(path("pods", namespace), f"{JOB_NAME_LABEL}={job_name}")
    pod = pods_by_job(pods).get(job_name)
    result = outcome.verify_result(job, pod)
    conditions = status.conditions if status else None
    if result is None:
        if status is None or status.phase != "Verifying" or status.verified:
            body = {
                "phase": "Verifying",
                "verified": False,
                "conditions": [
                    dump(c)
                    for c in set_condition(conditions, "Verified", "Unknown", "Verifying", f"Job {job_name} is checking the studies", now, generation)
                ],
            }
            written = await kube.patch(path("datasets", namespace, name, "status"), {"status": body})
            runtime.observe("datasets", namespace, name, written)
            runtime.wake_namespace(namespace)
        return 15.0
    summary = result.summary
    body: dict[str, Any] = {
        "phase": result.phase,
        "verified": result.verified,
        "verifiedAt": now.isoformat().replace("+00:00", "Z"),
        "contentHash": summary.get("contentHash"),
        "caseCount": summary.get("caseCount"),
        "fileCount": summary.get("fileCount"),
        "cohort": summary.get("cohort"),
        "violations": summary.get("violations") or None,
        "observedGeneration": generation,
        "conditions": [
            dump(c)
            for c in set_condition(
                conditions, "Verified", "True" if result.verified else "False", result.reason, result.message, now, generation
            )
        ],
    }
    written = await kube.patch(path("datasets", namespace, name, "status"), {"status": body})
    runtime.observe("datasets", namespace, name, written)  # the Validations woken below must see it
    await post_event(runtime, raw, "Normal" if result.verified else "Warning", result.reason, result.message)
    runtime.wake_namespace(namespace)
    return None

