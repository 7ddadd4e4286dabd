"""Validation: admission, its runs from queue to verdict, and its status.

A run's record is written to status (phase Queued, deterministic name) before
its Job is created, and the Job is created only if absent; its result is
derived from its Job and Pod, which outlive the operator, and committed to the
audit trail before status (see ``conclude``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lightbox.api import Algorithm, Dataset, SandboxPolicy, Validation
from lightbox.api import run as layout
from lightbox.api.audit import Drift
from lightbox.api.results import ScoreReport
from lightbox.api.validation import RunRecord, ValidationStatus
from lightbox.operator import admission as admission_mod
from lightbox.operator import approvals as approvals_mod
from lightbox.operator import builders, clock, outcome, runs, verdict
from lightbox.operator import drift as drift_mod
from lightbox.operator.conclude import conclude
from lightbox.operator.conditions import parse_time, post_event, set_condition
from lightbox.operator.kube import KubeError, path
from lightbox.operator.lookups import dump, load_approvals, load_dependencies, owned_by, parse_model, pods_by_job

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime

log = logging.getLogger("lightbox.operator")


async def _start_run(
    runtime: Runtime,
    validation: Validation,
    algorithm: Algorithm,
    dataset: Dataset,
    policy: SandboxPolicy | None,
    record: RunRecord,
) -> bool:
    """Create the run's NetworkPolicy, then its Job; both only if absent."""
    namespace = validation.metadata["namespace"]
    runtime.crash("before-job-create")
    netpol = builders.run_network_policy(validation, record.name)
    # The NetworkPolicy first: the pod must never exist without it.
    await runtime.kube.create(path("networkpolicies", namespace), netpol)
    scheduled = record.scheduled_for.isoformat() if record.scheduled_for else None
    job = builders.run_job(
        validation, algorithm, dataset, policy, record.name, record.number, runtime.config, scheduled, runtime.api_server
    )
    made, created = await runtime.kube.create(path("jobs", namespace), job)
    runtime.scheduler.observe_job(namespace, made, deleted=False)
    runtime.crash("after-job-create")
    return created


async def _capacity(runtime: Runtime, namespace: str, policy: SandboxPolicy | None) -> runs.Capacity:
    scheduler = runtime.scheduler
    now = asyncio.get_running_loop().time()
    if scheduler.needs_jobs(namespace, now, runtime.config.resync_seconds):
        jobs = await runtime.kube.list(path("jobs", namespace), f"{layout.LABEL_COMPONENT}={builders.COMPONENT_RUN}")
        scheduler.load_jobs(namespace, jobs, now)
    capacity = scheduler.capacity(namespace, policy)
    runtime.exporter.runs_active.labels(namespace).set(capacity.active_runs)
    return capacity


def _isolation_gate(policy: SandboxPolicy | None, namespace: str) -> tuple[str, str] | None:
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


async def reconcile_validation(runtime: Runtime, namespace: str, name: str) -> float | None:
    raw = await runtime.kube.get(path("validations", namespace, name))
    last_unsynced = runtime.scheduler.begin_pass(namespace, name)
    try:
        return await _reconcile_validation(runtime, namespace, name, raw)
    finally:
        for woken_namespace, count in runtime.scheduler.end_pass(namespace, name, last_unsynced):
            runtime.wake_heads(woken_namespace, count)


async def _reconcile_validation(runtime: Runtime, namespace: str, name: str, raw: dict[str, Any] | None) -> float | None:
    kube, config = runtime.kube, runtime.config
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        # Owner references take the Jobs, Pods and NetworkPolicies with it.
        runtime.scheduler.forget(namespace, name)
        runtime.exporter.forget_validation(namespace, name)
        return None
    validation = parse_model(Validation, raw)
    if validation is None:
        return None
    now = clock.utcnow()
    status = validation.status or ValidationStatus()
    generation = raw["metadata"].get("generation")
    algorithm, dataset, policies = await load_dependencies(runtime, validation, namespace)
    approvals = await load_approvals(runtime, namespace, policies)
    admission = admission_mod.admit(validation, algorithm, dataset, policies, approvals)
    counted = (
        approvals_mod.tally(algorithm, approvals, admission.policy.spec.approvals).counted
        if algorithm is not None and admission.policy is not None
        else []
    )
    policy = admission.policy
    task = algorithm.spec.task if algorithm else None

    selector = f"{layout.LABEL_COMPONENT}={builders.COMPONENT_RUN},{layout.LABEL_VALIDATION}={builders.label_value(name)}"
    uid = raw["metadata"]["uid"]
    jobs_raw = await kube.list(path("jobs", namespace), selector)
    jobs = {j["metadata"]["name"]: j for j in jobs_raw if owned_by(j, uid)}
    unfinished = [j for j in jobs.values() if not outcome.job_finished(j)]
    known = {r.name: r for r in status.runs or []}
    # Pods matter only for runs still open; a finished Job whose record is final needs none.
    need_pods = unfinished or any(known.get(n) is None or known[n].phase in runs.ACTIVE_PHASES for n in jobs)
    pods = pods_by_job(await kube.list(path("pods", namespace), selector)) if need_pods else {}

    records: dict[str, RunRecord] = {r.name: r for r in status.runs or []}
    events: list[tuple[str, str, str]] = []
    finished: list[RunRecord] = []
    drifts: dict[str, Drift | None] = {}
    before = next((c for c in status.conditions or [] if c.type == "Admitted"), None)
    if admission.admitted and before is not None and before.status != "True":
        events.append(("Normal", "Admitted", "the Validation may run now"))
    elif not admission.admitted and (before is None or before.reason != admission.problems[0].reason):
        events.append(("Warning", admission.problems[0].reason, admission.problems[0].message))

    # A Job without a record: status was lost between creating the Job and writing it.
    for job_name, job in jobs.items():
        if job_name not in records and not job["metadata"].get("deletionTimestamp"):
            annotations = job["metadata"].get("annotations") or {}
            number = int(annotations.get(layout.ANNOTATION_RUN_NUMBER, "0") or 0) or runs.next_number(records.values())
            records[job_name] = RunRecord(
                name=job_name,
                number=number,
                phase="Running",
                created_at=parse_time(job["metadata"].get("creationTimestamp")),
                scheduled_for=parse_time(annotations.get(builders.ANNOTATION_SCHEDULED_FOR)),
                image=algorithm.spec.image if algorithm else None,
            )

    # Follow active runs to their end.
    for run_name_, record in list(records.items()):
        if record.phase not in runs.ACTIVE_PHASES:
            continue
        job = jobs.get(run_name_)
        if job is None:
            if record.phase == "Running":
                gone = outcome.Outcome("Failed", outcome.JOB_FAILED, "the run's Job was deleted")
                records[run_name_] = await conclude(runtime, validation, record, gone, algorithm, dataset, policy, now, drifts, counted)
                finished.append(records[run_name_])
            continue
        if outcome.job_finished(job):
            # Only ever *free* a slot from a LIST (finishing is final); a stale LIST
            # must not re-add a Job the watch has already seen finish.
            runtime.scheduler.observe_job(namespace, job, deleted=True)
        result = outcome.run_outcome(job, pods.get(run_name_))
        if result is None and dataset is None and not outcome.job_finished(job):
            result = outcome.Outcome(
                "Failed",
                outcome.DATASET_DELETED,
                f"Dataset {validation.spec.dataset_ref.name} was deleted while the run was in progress; the run was stopped",
            )
        if result is None:
            suspended = bool(job["spec"].get("suspend"))
            phase = "Queued" if suspended else "Running"
            reason = "KueueAdmissionPending" if suspended else None
            message = "waiting for Kueue to admit the Job" if suspended else None
            if (record.phase, record.reason) != (phase, reason):
                records[run_name_] = record.model_copy(update={"phase": phase, "reason": reason, "message": message})
            continue
        runtime.crash("before-result-write")
        records[run_name_] = await conclude(runtime, validation, record, result, algorithm, dataset, policy, now, drifts, counted)
        finished.append(records[run_name_])
        if not outcome.job_finished(job) and not outcome.pod_finished(pods.get(run_name_)):
            # Image pull failures and deleted datasets leave a live Job behind: stop it.
            await kube.delete(path("jobs", namespace, run_name_), "Background")
            runtime.scheduler.observe_job(namespace, job, deleted=True)

    active = [r for r in records.values() if r.phase in runs.ACTIVE_PHASES]
    # An out-of-range schedule blocks admission (InvalidSchedule) and has no ticks.
    scheduled = bool(validation.spec.schedule) and not admission_mod.check_schedule(validation)
    new_record: RunRecord | None = None
    if admission.admitted and not validation.spec.suspend and not active:
        tick: datetime | None = None
        due = False
        if not scheduled:
            due = not records
        else:
            last = max((r.scheduled_for for r in records.values() if r.scheduled_for), default=None)
            created = parse_time(raw["metadata"].get("creationTimestamp")) or now
            tick = runs.due_tick(validation.spec.schedule, last or created, now)
            due = tick is not None
        if due:
            number = runs.next_number(records.values(), [])
            new_record = RunRecord(
                name=runs.run_name(name, number),
                number=number,
                phase="Queued",
                reason="WaitingForCapacity",
                message="waiting for a run slot",
                created_at=now,
                scheduled_for=tick,
                image=algorithm.spec.image if algorithm else None,
                dataset_hash=dataset.status.content_hash if dataset and dataset.status else None,
            )
            records[new_record.name] = new_record

    # Start the queued run when it is admitted, isolated and first in line.
    started = False
    scheduler = runtime.scheduler
    scheduler.keep(namespace, name, (r.number for r in records.values()))
    for run_name_, record in sorted(records.items(), key=lambda kv: kv[1].number):
        if record.phase != "Queued" or run_name_ in jobs:
            scheduler.dequeue(namespace, name, record.number)
            continue
        gpus = algorithm.spec.resources.gpus if algorithm else 0
        # Arrival comes from the cluster (the schedule tick, else the Validation's creation),
        # not from when this operator happened to look, so the order survives restarts and races.
        entry = runs.QueueEntry(
            queued_at=record.scheduled_for or parse_time(raw["metadata"].get("creationTimestamp")) or now,
            validation_created=raw["metadata"].get("creationTimestamp") or "",
            validation=name,
            number=record.number,
            gpus=gpus,
        )
        scheduler.enqueue(namespace, entry)
        if not admission.admitted:
            problems = "; ".join(f"{p.reason}: {p.message}" for p in admission.problems)
            records[run_name_] = record.model_copy(update={"reason": "NotAdmitted", "message": problems[:2048]})
            continue
        gate = _isolation_gate(policy, namespace)
        if gate is not None:
            records[run_name_] = record.model_copy(update={"reason": gate[0], "message": gate[1]})
            if policy is not None:
                runtime.wake_policy(policy.metadata["name"])
            continue
        if not scheduler.synced:
            continue
        # No status write before the Job: its name is deterministic and a restarted
        # operator adopts a Job that has no record yet (see above), so the run is
        # neither lost nor duplicated whichever write a crash interrupts.
        async with runtime.lock(namespace):
            capacity = await _capacity(runtime, namespace, policy)
            # Validations created earlier whose first pass has not queued their run yet keep their place too.
            if scheduler.may_start(namespace, entry, capacity):
                assert algorithm is not None and dataset is not None
                try:
                    await _start_run(runtime, validation, algorithm, dataset, policy, record)
                except KubeError as exc:
                    if exc.status not in (400, 422):
                        raise  # conflicts, quota, outages: try again
                    # The API server will never accept this Job: say why instead of retrying forever.
                    scheduler.dequeue(namespace, name, record.number)
                    rejected = outcome.Outcome("Failed", "RunRejected", str(exc)[:2048])
                    records[run_name_] = await conclude(runtime, validation, record, rejected, algorithm, dataset, policy, now, drifts, counted)
                    finished.append(records[run_name_])
                    continue
                scheduler.dequeue(namespace, name, record.number)
                suspended = bool(builders.queue_name(validation, policy))
                records[run_name_] = record.model_copy(
                    update={
                        "phase": "Queued" if suspended else "Running",
                        "reason": "KueueAdmissionPending" if suspended else None,
                        "message": "waiting for Kueue to admit the Job" if suspended else None,
                        "created_at": record.created_at or now,
                    }
                )
                log.info("%s/%s: run %s started", namespace, name, run_name_)
                events.append(("Normal", "RunStarted", f"run {run_name_} started (Job {run_name_})"))
                started = True
                # The next in line may fit too; they would otherwise wait for their resync.
                runtime.wake_heads(namespace, capacity.max_runs - capacity.active_runs - 1)
            elif not capacity.admits(entry.gpus):
                # Volatile counts stay out of status: each change would be a write and a watch event.
                message = (
                    f"namespace {namespace} is at its limit of {capacity.max_runs} concurrent runs and "
                    f"{capacity.max_gpus} GPUs in use; this run needs {entry.gpus} GPUs"
                )
                records[run_name_] = record.model_copy(update={"reason": "WaitingForCapacity", "message": message})
            else:
                message = f"runs queued earlier in namespace {namespace} start first"
                records[run_name_] = record.model_copy(update={"reason": "WaitingInQueue", "message": message})
    runtime.exporter.runs_queued.labels(namespace).set(scheduler.queued_count(namespace))

    # Keep the configured history; the Jobs of dropped runs go too.
    kept, dropped = runs.prune(list(records.values()), validation.spec.history_limit)
    for record in dropped:
        await kube.delete(path("jobs", namespace, record.name), "Background")
        await kube.delete(path("networkpolicies", namespace, record.name), "Background")
    records = {r.name: r for r in kept}

    for record in finished:
        ok = record.phase == "Succeeded"
        text = f"run {record.name} {'succeeded' if ok else 'failed'}: {record.reason}: {record.message or ''}".rstrip(": ")
        if ok and record.verdict:
            text += f"; verdict {record.verdict}"
        events.append(("Normal" if ok else "Warning", "RunSucceeded" if ok else record.reason or "RunFailed", text))
        runtime.exporter.record_finished(record.reason or ("Succeeded" if ok else "Failed"))
        judged = drifts.get(record.name)
        if judged is not None:
            # Against the baseline: conditions, a Warning Event per finding, Prometheus series.
            conds = status.conditions
            for type_, value, reason, message in drift_mod.conditions(judged):
                conds = set_condition(conds, type_, value, reason, message, now, generation)
                if value == "True":
                    events.append(("Warning", reason, f"run {record.name}: {message}"[:1024]))
            status = status.model_copy(update={"conditions": conds})
            runtime.exporter.record_drift(namespace, name, judged)

    await _write_status(runtime, raw, status, records, admission, policy, generation, now, scheduled, validation, task)
    for type_, reason, message in events:
        await post_event(runtime, raw, type_, reason, message)
    if finished:
        # A slot freed up: the next queued runs in this namespace may start.
        runtime.wake_heads(namespace, len(finished))

    latest = runs.latest_finished(records.values())
    if latest is not None and latest.phase == "Succeeded" and latest.metrics:
        runtime.exporter.record_report(namespace, name, _report_of(latest, task), latest.verdict)

    # When to look again without an event.
    if started or any(r.phase in runs.ACTIVE_PHASES for r in records.values()):
        return 10.0 if any(r.phase == "Queued" for r in records.values()) else config.resync_seconds
    if scheduled and not validation.spec.suspend:
        next_at = runs.next_tick(validation.spec.schedule, now)
        return max(1.0, min((next_at - now).total_seconds() + 0.5, 300.0))
    return 300.0


async def _write_status(
    runtime: Runtime,
    raw: dict[str, Any],
    status: ValidationStatus,
    records: dict[str, RunRecord],
    admission: admission_mod.Admission,
    policy: SandboxPolicy | None,
    generation: int | None,
    now: datetime,
    scheduled: bool,
    validation: Validation,
    task: str | None,
) -> None:
    ordered = sorted(records.values(), key=lambda r: r.number)
    if admission.admitted:
        name = policy.metadata.get("name") if policy else "?"
        conditions = set_condition(status.conditions, "Admitted", "True", "Admitted", f"allowed by SandboxPolicy {name}", now, generation)
    else:
        first = admission.problems[0]
        message = "; ".join(f"{p.reason}: {p.message}" for p in admission.problems)
        conditions = set_condition(status.conditions, "Admitted", "False", first.reason, message, now, generation)
    latest = runs.latest_finished(ordered)
    summary = status.summary
    verdict_ = status.verdict
    if latest is not None:
        if latest.phase == "Succeeded" and latest.metrics is not None:
            summary = verdict.summarize(_report_of(latest, task))[:128]
        else:
            summary = f"{latest.reason}"[:128]
        verdict_ = latest.verdict
        ok = latest.phase == "Succeeded"
        conditions = set_condition(
            conditions, "Succeeded", "True" if ok else "False", latest.reason or latest.phase, latest.message or "", now, generation
        )
    new_status = ValidationStatus(
        phase=runs.validation_phase(ValidationStatus(runs=ordered), admission.admitted, scheduled),  # type: ignore[arg-type]
        verdict=verdict_,
        summary=summary,
        conditions=conditions,
        runs=ordered or None,
        last_run_time=max((r.created_at for r in ordered if r.created_at and r.phase != "Queued"), default=status.last_run_time),
        next_run_time=runs.next_tick(validation.spec.schedule, now) if scheduled else None,
        observed_generation=generation,
    )
    body = dump(new_status)
    if body == dump(status):
        return
    # Transition times of unchanged conditions stay; the rest of status is replaced.
    body.setdefault("nextRunTime", None)
    namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    written = await runtime.kube.patch(path("validations", namespace, name, "status"), {"status": body})
    if written is not None:
        runtime.own_writes[(namespace, name)] = written["metadata"]["resourceVersion"]


def _report_of(record: RunRecord, task: str | None) -> ScoreReport:
    """The aggregate part of a stored run, to summarise it and export it again after a restart."""
    if task is None:
        metrics = set(record.metrics or {})
        task = "segmentation" if metrics & {"dice", "iou", "hd95"} else "detection" if "frocSensitivity" in metrics else "classification"
    return ScoreReport(task=task, cases=record.cases or 0, scored=record.scored or 0, metrics=record.metrics or {})  # type: ignore[arg-type]

