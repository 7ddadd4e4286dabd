"""Validation: admission, its runs from queue to verdict, and its status.

One pass reads the Validation, what it depends on and the Jobs it owns, then:
adopts Jobs that lost their record, follows active runs to their end, queues
the run that is due, starts the queued runs that are first in line, prunes the
history, and writes status (and Events) once. The steps live in
``validation_runs`` and ``validation_status``; this module orders them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightbox.api import Validation
from lightbox.operator import clock
from lightbox.operator import validation_runs as run_steps
from lightbox.operator import validation_status as status_steps
from lightbox.operator.conditions import post_event
from lightbox.operator.kube import path
from lightbox.operator.lookups import parse_model
from lightbox.operator.validation_pass import load_pass

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime


async def reconcile_validation(runtime: Runtime, namespace: str, name: str) -> float | None:
    raw = await runtime.kube.get(path("validations", namespace, name))
    last_unsynced = runtime.scheduler.begin_pass(namespace, name)
    try:
        return await _reconcile_validation(runtime, namespace, name, raw)
    finally:
        for woken_namespace, count in runtime.scheduler.end_pass(namespace, name, last_unsynced):
            runtime.wake_heads(woken_namespace, count)


async def _reconcile_validation(
    runtime: Runtime, namespace: str, name: str, raw: dict[str, Any] | None
) -> float | None:
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        # Owner references take the Jobs, Pods and NetworkPolicies with it.
        runtime.scheduler.forget(namespace, name)
        runtime.exporter.forget_validation(namespace, name)
        return None
    validation = parse_model(Validation, raw)
    if validation is None:
        return None
    p = await load_pass(runtime, raw, validation, clock.utcnow())
    p.events.extend(status_steps.admission_events(p))
    p.records = run_steps.adopted_records(p.jobs, p.records, p.algorithm.spec.image if p.algorithm else None)
    await run_steps.follow_active_runs(p)
    due = run_steps.due_run(p)
    if due is not None:
        p.records[due.name] = due
    await run_steps.start_queued_runs(p)
    await run_steps.prune_history(p)
    status_steps.report_finished(p)

    await status_steps.write_status(p)
    for type_, reason, message in p.events:
        await post_event(runtime, raw, type_, reason, message)
    if p.finished:
        # A slot freed up: the next queued runs in this namespace may start.
        runtime.wake_heads(namespace, len(p.finished))
    status_steps.export_latest(p)
    return status_steps.next_pass_in(p, runtime.config.resync_seconds)
