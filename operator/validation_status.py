"""A Validation's status at the end of a pass, its Events, and what it exports.

Status is derived from the run records and the admission alone and written in
one patch, only when it changed; the conditions keep their transition times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightbox.api.common import Condition
from lightbox.api.results import ScoreReport
from lightbox.api.run import Task
from lightbox.api.validation import RunRecord, ValidationStatus
from lightbox.operator import drift as drift_mod
from lightbox.operator import runs, verdict
from lightbox.operator.conditions import set_condition
from lightbox.operator.kube import path
from lightbox.operator.lookups import dump
from lightbox.operator.validation_pass import Event, ValidationPass

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime

SEGMENTATION_METRICS = frozenset({"dice", "iou", "hd95"})


def report_of(record: RunRecord, task: Task | None) -> ScoreReport:
    """The aggregate part of a stored run, to summarise it and export it again after a restart."""
    if task is None:
        metrics = set(record.metrics or {})
        if metrics & SEGMENTATION_METRICS:
            task = "segmentation"
        elif "frocSensitivity" in metrics:
            task = "detection"
        else:
            task = "classification"
    return ScoreReport(task=task, cases=record.cases or 0, scored=record.scored or 0, metrics=record.metrics or {})


def admission_events(p: ValidationPass) -> list[Event]:
    """An Event when admission changed: admitted again, or refused for a new reason."""
    before = next((c for c in p.status.conditions or [] if c.type == "Admitted"), None)
    if p.admission.admitted and before is not None and before.status != "True":
        return [("Normal", "Admitted", "the Validation may run now")]
    if not p.admission.admitted and (before is None or before.reason != p.admission.problems[0].reason):
        first = p.admission.problems[0]
        return [("Warning", first.reason, first.message)]
    return []


def finished_event(record: RunRecord) -> Event:
    ok = record.phase == "Succeeded"
    text = f"run {record.name} {'succeeded' if ok else 'failed'}: {record.reason}: {record.message or ''}".rstrip(": ")
    if ok and record.verdict:
        text += f"; verdict {record.verdict}"
    return ("Normal" if ok else "Warning", "RunSucceeded" if ok else record.reason or "RunFailed", text)


def report_finished(p: ValidationPass) -> None:
    """Each run finished in this pass: its Event, its counter, and its drift against the baseline
    (conditions, a Warning Event per finding, Prometheus series)."""
    for record in p.finished:
        p.events.append(finished_event(record))
        ok = record.phase == "Succeeded"
        p.runtime.exporter.record_finished(record.reason or ("Succeeded" if ok else "Failed"))
        judged = p.drifts.get(record.name)
        if judged is None:
            continue
        conds = p.status.conditions
        for type_, value, reason, message in drift_mod.conditions(judged):
            conds = set_condition(conds, type_, value, reason, message, p.now, p.generation)
            if value == "True":
                p.events.append(("Warning", reason, f"run {record.name}: {message}"[:1024]))
        p.status = p.status.model_copy(update={"conditions": conds})
        p.runtime.exporter.record_drift(p.namespace, p.name, judged)


def _admitted_condition(p: ValidationPass) -> list[Condition]:
    if p.admission.admitted:
        name = p.policy.metadata.get("name") if p.policy else "?"
        message = f"allowed by SandboxPolicy {name}"
        return set_condition(p.status.conditions, "Admitted", "True", "Admitted", message, p.now, p.generation)
    first = p.admission.problems[0]
    message = "; ".join(f"{problem.reason}: {problem.message}" for problem in p.admission.problems)
    return set_condition(p.status.conditions, "Admitted", "False", first.reason, message, p.now, p.generation)


def new_status(p: ValidationPass) -> ValidationStatus:
    status = p.status
    ordered = sorted(p.records.values(), key=lambda r: r.number)
    conditions = _admitted_condition(p)
    latest = runs.latest_finished(ordered)
    summary, verdict_ = status.summary, status.verdict
    if latest is not None:
        ok = latest.phase == "Succeeded"
        if ok and latest.metrics is not None:
            summary = verdict.summarize(report_of(latest, p.task))[:128]
        else:
            summary = f"{latest.reason}"[:128]
        verdict_ = latest.verdict
        conditions = set_condition(
            conditions, "Succeeded", "True" if ok else "False", latest.reason or latest.phase, latest.message or "",
            p.now, p.generation,
        )
    schedule = p.schedule
    return ValidationStatus(
        phase=runs.validation_phase(ValidationStatus(runs=ordered), p.admission.admitted, schedule is not None),
        verdict=verdict_,
        summary=summary,
        conditions=conditions,
        runs=ordered or None,
        last_run_time=max(
            (r.created_at for r in ordered if r.created_at and r.phase != "Queued"), default=status.last_run_time
        ),
        next_run_time=runs.next_tick(schedule, p.now) if schedule is not None else None,
        observed_generation=p.generation,
    )


async def write_status(p: ValidationPass) -> None:
    body = dump(new_status(p))
    if body == dump(p.status):
        return
    # Transition times of unchanged conditions stay; the rest of status is replaced.
    body.setdefault("nextRunTime", None)
    await _patch_status(p.runtime, p.namespace, p.name, body)


async def _patch_status(runtime: Runtime, namespace: str, name: str, body: dict[str, object]) -> None:
    written = await runtime.kube.patch(path("validations", namespace, name, "status"), {"status": body})
    if written is not None:
        # The watch delivers this write back to us: its resourceVersion marks it as our own echo.
        runtime.own_writes[(namespace, name)] = written["metadata"]["resourceVersion"]


def export_latest(p: ValidationPass) -> None:
    latest = runs.latest_finished(p.records.values())
    if latest is not None and latest.phase == "Succeeded" and latest.metrics:
        p.runtime.exporter.record_report(p.namespace, p.name, report_of(latest, p.task), latest.verdict)


def next_pass_in(p: ValidationPass, resync_seconds: float) -> float:
    """Seconds until the next pass without an event."""
    records = p.records.values()
    if p.started or any(r.phase in runs.ACTIVE_PHASES for r in records):
        return 10.0 if any(r.phase == "Queued" for r in records) else resync_seconds
    schedule = p.schedule
    if schedule is not None and not p.validation.spec.suspend:
        next_at = runs.next_tick(schedule, p.now)
        return max(1.0, min((next_at - p.now).total_seconds() + 0.5, 300.0))
    return 300.0
