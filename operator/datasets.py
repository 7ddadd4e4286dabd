"""Dataset: verified by a trusted Job before any run may read it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from lightbox.api import Dataset
from lightbox.api.dataset import DatasetStatus
from lightbox.operator import builders, clock, outcome, verify_events
from lightbox.operator.conditions import post_event, set_condition
from lightbox.operator.kube import path
from lightbox.operator.lookups import JOB_NAME_LABEL, dump, parse_model, pods_by_job

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime


FINAL_PHASES = frozenset({"Verified", "Rejected", "Error"})
# A pass while the verification Job runs, to read its result soon after it ends.
VERIFY_POLL_SECONDS = 15.0


def verifying_status(status: DatasetStatus | None, job_name: str, now: datetime, generation: int) -> dict[str, Any]:
    conditions = set_condition(
        status.conditions if status else None, "Verified", "Unknown", "Verifying",
        f"Job {job_name} is checking the studies", now, generation,
    )
    return {"phase": "Verifying", "verified": False, "conditions": [dump(c) for c in conditions]}


def verified_status(
    status: DatasetStatus | None, result: outcome.VerifyResult, now: datetime, generation: int
) -> dict[str, Any]:
    """The verifier's verdict as status: only the summary's checked fields, never its raw text."""
    summary = result.summary
    conditions = set_condition(
        status.conditions if status else None, "Verified", "True" if result.verified else "False", result.reason,
        result.message, now, generation,
    )
    return {
        "phase": result.phase,
        "verified": result.verified,
        "verifiedAt": now.isoformat().replace("+00:00", "Z"),
        "contentHash": summary.get("contentHash"),
        "caseCount": summary.get("caseCount"),
        "fileCount": summary.get("fileCount"),
        "cohort": summary.get("cohort"),
        "violations": summary.get("violations") or None,
        "observedGeneration": generation,
        "conditions": [dump(c) for c in conditions],
    }


async def reconcile_dataset(runtime: Runtime, namespace: str, name: str) -> float | None:
    raw = await runtime.kube.get(path("datasets", namespace, name))
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        runtime.wake_namespace(namespace)
        return None
    dataset = parse_model(Dataset, raw)
    if dataset is None:
        return None
    generation = int(raw["metadata"].get("generation", 1))
    status = dataset.status
    if status is not None and status.observed_generation == generation and status.phase in FINAL_PHASES:
        return None
    now = clock.utcnow()
    job_name = builders.verify_job_name(name, generation)
    result = await _verification(runtime, raw, dataset, job_name)
    if result is None:
        if status is None or status.phase != "Verifying" or status.verified:
            await _write(runtime, namespace, name, verifying_status(status, job_name, now, generation))
            runtime.wake_namespace(namespace)
        return VERIFY_POLL_SECONDS
    # Written (and the watch-fed copy updated) before the Validations woken below look.
    await _write(runtime, namespace, name, verified_status(status, result, now, generation))
    await post_event(runtime, raw, *verify_events.finished_event(result))
    runtime.wake_namespace(namespace)
    return None


async def _verification(
    runtime: Runtime, raw: dict[str, Any], dataset: Dataset, job_name: str
) -> outcome.VerifyResult | None:
    """The verification Job's result (None while it runs); the Job and its NetworkPolicy are made if
    absent, and the Job's start told in an Event (once: a Job another pass made is not announced again)."""
    kube = runtime.kube
    namespace = raw["metadata"]["namespace"]
    job = await kube.get(path("jobs", namespace, job_name))
    if job is None:
        await kube.create(path("networkpolicies", namespace), builders.verify_network_policy(dataset, job_name))
        job, created = await kube.create(
            path("jobs", namespace), builders.verify_job(dataset, job_name, runtime.config)
        )
        if created:
            studies = dataset.spec.studies
            where = f"PVC {studies.claim_name}" + (f" at {studies.sub_path}" if studies.sub_path else "")
            message = verify_events.started_message(job_name, where, dataset.status)
            await post_event(runtime, raw, "Normal", verify_events.STARTED_REASON, message)
    pods = await kube.list(path("pods", namespace), f"{JOB_NAME_LABEL}={job_name}")
    return outcome.verify_result(job, pods_by_job(pods).get(job_name))


async def _write(runtime: Runtime, namespace: str, name: str, body: dict[str, Any]) -> None:
    written = await runtime.kube.patch(path("datasets", namespace, name, "status"), {"status": body})
    runtime.observe("datasets", namespace, name, written)
