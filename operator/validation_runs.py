"""A Validation's runs through one pass: adopted, followed to their end, made due, queued, started.

Restart safety: a run's name is deterministic and its Job is created only if
absent; a Job without a record (status lost between the two writes) is adopted,
so a run is neither lost nor duplicated whichever write a crash interrupts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lightbox.api import SandboxPolicy
from lightbox.api import run as layout
from lightbox.api.validation import RunRecord
from lightbox.operator import builders, outcome, runs
from lightbox.operator.conditions import parse_time
from lightbox.operator.kube import KubeError, path
from lightbox.operator.validation_pass import ValidationPass

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime

log = logging.getLogger("lightbox.operator")

KUEUE_PENDING = ("KueueAdmissionPending", "waiting for Kueue to admit the Job")


# -- runs already under way -------------------------------------------------------


def adopted_records(
    jobs: dict[str, dict[str, Any]], records: dict[str, RunRecord], image: str | None
) -> dict[str, RunRecord]:
    """Records for the Jobs that have none: status was lost between creating the Job and writing it."""
    adopted = dict(records)
    for job_name, job in jobs.items():
        if job_name in adopted or job["metadata"].get("deletionTimestamp"):
            continue
        annotations = job["metadata"].get("annotations") or {}
        number = int(annotations.get(layout.ANNOTATION_RUN_NUMBER, "0") or 0) or runs.next_number(adopted.values())
        adopted[job_name] = RunRecord(
            name=job_name,
            number=number,
            phase="Running",
            created_at=parse_time(job["metadata"].get("creationTimestamp")),
            scheduled_for=parse_time(annotations.get(builders.ANNOTATION_SCHEDULED_FOR)),
            image=image,
        )
    return adopted


def still_running(record: RunRecord, job: dict[str, Any]) -> RunRecord:
    """An unfinished run's record as its Job stands: held by Kueue (suspended) or running."""
    suspended = bool(job["spec"].get("suspend"))
    reason, message = KUEUE_PENDING if suspended else (None, None)
    phase = "Queued" if suspended else "Running"
    if (record.phase, record.reason) == (phase, reason):
        return record
    return record.model_copy(update={"phase": phase, "reason": reason, "message": message})


def run_result(p: ValidationPass, job: dict[str, Any]) -> outcome.Outcome | None:
    result = outcome.run_outcome(job, p.pods.get(job["metadata"]["name"]))
    if result is None and p.dataset is None and not outcome.job_finished(job):
        return outcome.Outcome(
            "Failed",
            outcome.DATASET_DELETED,
            f"Dataset {p.validation.spec.dataset_ref.name} was deleted while the run was in progress; "
            "the run was stopped",
        )
    return result


async def follow_active_runs(p: ValidationPass) -> None:
    """Follow every active run to its end: a finished one is concluded, a live one kept current."""
    for record in list(p.records.values()):
        if record.phase in runs.ACTIVE_PHASES:
            await _follow(p, record)


async def _follow(p: ValidationPass, record: RunRecord) -> None:
    scheduler = p.runtime.scheduler
    job = p.jobs.get(record.name)
    if job is None:
        if record.phase == "Running":
            await p.conclude(record, outcome.Outcome("Failed", outcome.JOB_FAILED, "the run's Job was deleted"))
        return
    if outcome.job_finished(job):
        # Only ever *free* a slot from a LIST (finishing is final); a stale LIST
        # must not re-add a Job the watch has already seen finish.
        scheduler.observe_job(p.namespace, job, deleted=True)
    result = run_result(p, job)
    if result is None:
        p.records[record.name] = still_running(record, job)
        return
    p.runtime.crash("before-result-write")
    await p.conclude(record, result)
    if not outcome.job_finished(job) and not outcome.pod_finished(p.pods.get(record.name)):
        # Image pull failures and deleted datasets leave a live Job behind: stop it.
        await p.runtime.kube.delete(path("jobs", p.namespace, record.name), "Background")
        scheduler.observe_job(p.namespace, job, deleted=True)


# -- the next run -------------------------------------------------------------------


def due_run(p: ValidationPass) -> RunRecord | None:
    """The run to queue now: the first of a one-shot Validation, or the latest tick of a schedule."""
    records = p.records
    if not p.admission.admitted or p.validation.spec.suspend:
        return None
    if any(r.phase in runs.ACTIVE_PHASES for r in records.values()):
        return None
    tick: datetime | None = None
    schedule = p.schedule
    if schedule is None:
        if records:
            return None
    else:
        last = max((r.scheduled_for for r in records.values() if r.scheduled_for), default=None)
        tick = runs.due_tick(schedule, last or parse_time(p.created) or p.now, p.now)
        if tick is None:
            return None
    number = runs.next_number(records.values(), [])
    dataset = p.dataset
    return RunRecord(
        name=runs.run_name(p.name, number),
        number=number,
        phase="Queued",
        reason="WaitingForCapacity",
        message="waiting for a run slot",
        created_at=p.now,
        scheduled_for=tick,
        image=p.algorithm.spec.image if p.algorithm else None,
        dataset_hash=dataset.status.content_hash if dataset and dataset.status else None,
    )


# -- queued runs ----------------------------------------------------------------------


def queue_entry(p: ValidationPass, record: RunRecord) -> runs.QueueEntry:
    # Arrival comes from the cluster (the schedule tick, else the Validation's creation),
    # not from when this operator happened to look, so the order survives restarts and races.
    return runs.QueueEntry(
        queued_at=record.scheduled_for or parse_time(p.created) or p.now,
        validation_created=p.created,
        validation=p.name,
        number=record.number,
        gpus=p.algorithm.spec.resources.gpus if p.algorithm else 0,
    )


def isolation_gate(policy: SandboxPolicy | None, namespace: str) -> tuple[str, str] | None:
    """(reason, message) when the namespace may not run vendor code yet."""
    if policy is None or not policy.spec.isolation_probe.required:
        return None
    isolation = (policy.status.isolation or {}) if policy.status else {}
    result = isolation.get(namespace)
    if result is None:
        return (
            "AwaitingIsolationProbe",
            f"waiting for the isolation probe of SandboxPolicy {policy.metadata['name']} in namespace {namespace}",
        )
    if not result.isolated:
        return (
            "NamespaceNotIsolated",
            f"the isolation probe in namespace {namespace} reached the network ({result.message or 'see the policy'}); "
            "no vendor container starts here until NetworkPolicies are enforced",
        )
    return None


def waiting(record: RunRecord, entry: runs.QueueEntry, capacity: runs.Capacity, namespace: str) -> RunRecord:
    """A queued run that may not start yet, saying why (no volatile counts: each change would be a write)."""
    if not capacity.admits(entry.gpus):
        message = (
            f"namespace {namespace} is at its limit of {capacity.max_runs} concurrent runs and "
            f"{capacity.max_gpus} GPUs in use; this run needs {entry.gpus} GPUs"
        )
        return record.model_copy(update={"reason": "WaitingForCapacity", "message": message})
    message = f"runs queued earlier in namespace {namespace} start first"
    return record.model_copy(update={"reason": "WaitingInQueue", "message": message})


def started(record: RunRecord, kueue: bool, now: datetime) -> RunRecord:
    reason, message = KUEUE_PENDING if kueue else (None, None)
    return record.model_copy(
        update={
            "phase": "Queued" if kueue else "Running",
            "reason": reason,
            "message": message,
            "created_at": record.created_at or now,
        }
    )


async def start_queued_runs(p: ValidationPass) -> None:
    """Start each queued run that is admitted, isolated and first in line; say why the others wait."""
    scheduler = p.runtime.scheduler
    scheduler.keep(p.namespace, p.name, (r.number for r in p.records.values()))
    for record in sorted(p.records.values(), key=lambda r: r.number):
        if record.phase != "Queued" or record.name in p.jobs:
            scheduler.dequeue(p.namespace, p.name, record.number)
            continue
        entry = queue_entry(p, record)
        scheduler.enqueue(p.namespace, entry)
        blocked = _blocked(p, record)
        if blocked is not None:
            p.records[record.name] = blocked
        elif scheduler.synced:
            async with p.runtime.lock(p.namespace):
                await _start_if_first(p, record, entry)
    p.runtime.exporter.runs_queued.labels(p.namespace).set(scheduler.queued_count(p.namespace))


def _blocked(p: ValidationPass, record: RunRecord) -> RunRecord | None:
    """The record saying why the run may not start at all (not admitted, namespace not isolated), else None."""
    if not p.admission.admitted:
        problems = "; ".join(f"{problem.reason}: {problem.message}" for problem in p.admission.problems)
        return record.model_copy(update={"reason": "NotAdmitted", "message": problems[:2048]})
    gate = isolation_gate(p.policy, p.namespace)
    if gate is None:
        return None
    if p.policy is not None:
        p.runtime.wake_policy(p.policy.metadata["name"])
    return record.model_copy(update={"reason": gate[0], "message": gate[1]})


async def _start_if_first(p: ValidationPass, record: RunRecord, entry: runs.QueueEntry) -> None:
    """Under the namespace lock. No status write before the Job: see the module's note."""
    capacity = await capacity_of(p.runtime, p.namespace, p.policy)
    # Validations created earlier whose first pass has not queued their run yet keep their place too.
    if not p.runtime.scheduler.may_start(p.namespace, entry, capacity):
        p.records[record.name] = waiting(record, entry, capacity, p.namespace)
        return
    try:
        await _create_run_objects(p, record)
    except KubeError as exc:
        if exc.status not in (400, 422):
            raise  # conflicts, quota, outages: try again
        # The API server will never accept this Job: say why instead of retrying forever.
        p.runtime.scheduler.dequeue(p.namespace, p.name, record.number)
        await p.conclude(record, outcome.Outcome("Failed", "RunRejected", str(exc)[:2048]))
        return
    p.runtime.scheduler.dequeue(p.namespace, p.name, record.number)
    p.records[record.name] = started(record, bool(builders.queue_name(p.validation, p.policy)), p.now)
    log.info("%s/%s: run %s started", p.namespace, p.name, record.name)
    p.events.append(("Normal", "RunStarted", f"run {record.name} started (Job {record.name})"))
    p.started = True
    # The next in line may fit too; they would otherwise wait for their resync.
    p.runtime.wake_heads(p.namespace, capacity.max_runs - capacity.active_runs - 1)


async def _create_run_objects(p: ValidationPass, record: RunRecord) -> None:
    """Create the run's NetworkPolicy, then its Job; both only if absent."""
    runtime, namespace = p.runtime, p.namespace
    assert p.algorithm is not None and p.dataset is not None  # admitted: both exist
    runtime.crash("before-job-create")
    # The NetworkPolicy first: the pod must never exist without it.
    netpol = builders.run_network_policy(p.validation, record.name)
    await runtime.kube.create(path("networkpolicies", namespace), netpol)
    scheduled = record.scheduled_for.isoformat() if record.scheduled_for else None
    job = builders.run_job(
        p.validation, p.algorithm, p.dataset, p.policy, record.name, record.number, runtime.config, scheduled,
        runtime.api_server,
    )
    made, _ = await runtime.kube.create(path("jobs", namespace), job)
    runtime.scheduler.observe_job(namespace, made, deleted=False)
    runtime.crash("after-job-create")


async def capacity_of(runtime: Runtime, namespace: str, policy: SandboxPolicy | None) -> runs.Capacity:
    scheduler = runtime.scheduler
    now = asyncio.get_running_loop().time()
    if scheduler.needs_jobs(namespace, now, runtime.config.resync_seconds):
        jobs = await runtime.kube.list(path("jobs", namespace), f"{layout.LABEL_COMPONENT}={builders.COMPONENT_RUN}")
        scheduler.load_jobs(namespace, jobs, now)
    capacity = scheduler.capacity(namespace, policy)
    runtime.exporter.record_capacity(namespace, capacity)
    return capacity


# -- history --------------------------------------------------------------------------


async def prune_history(p: ValidationPass) -> None:
    """Keep the configured history; the Jobs and NetworkPolicies of dropped runs go too."""
    kept, dropped = runs.prune(list(p.records.values()), p.validation.spec.history_limit)
    for record in dropped:
        await p.runtime.kube.delete(path("jobs", p.namespace, record.name), "Background")
        await p.runtime.kube.delete(path("networkpolicies", p.namespace, record.name), "Background")
    p.records = {r.name: r for r in kept}


def active(records: Iterable[RunRecord]) -> bool:
    return any(r.phase in runs.ACTIVE_PHASES for r in records)
