"""A run's conclusion: its final record, committed to the audit trail before status.

The audit trail is the commit point of a run: a record already there (written
before a restart) is the result, so no run is judged twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lightbox.api import Algorithm, AlgorithmApproval, Dataset, SandboxPolicy, Validation
from lightbox.api import run as layout
from lightbox.api.audit import Drift
from lightbox.api.validation import RunRecord
from lightbox.operator import audit, outcome, verdict
from lightbox.operator import drift as drift_mod
from lightbox.operator.kube import KubeError, path

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime


def finish_record(record: RunRecord, result: outcome.Outcome, validation: Validation, now: datetime) -> RunRecord:
    update: dict[str, Any] = {
        "phase": result.phase,
        "reason": result.reason,
        "message": result.message,
        "finished_at": now,
    }
    report = result.report
    if report is not None:
        criteria, overall = verdict.evaluate(validation.spec.acceptance, report)
        update.update(
            cases=report.cases,
            scored=report.scored,
            failures=report.failures,
            metrics=report.metrics,
            subgroups=report.subgroups or None,
            roc=report.roc or None,
            reliability=report.reliability or None,
            froc=report.froc or None,
            dice_histogram=report.dice_histogram or None,
            criteria=criteria or None,
            verdict=overall,
        )
    return record.model_copy(update=update)


async def conclude(
    runtime: Runtime,
    validation: Validation,
    record: RunRecord,
    result: outcome.Outcome,
    algorithm: Algorithm | None,
    dataset: Dataset | None,
    policy: SandboxPolicy | None,
    now: datetime,
    drifts: dict[str, Drift | None] | None = None,
    approvals: Sequence[AlgorithmApproval] = (),
) -> RunRecord:
    """The run's final record. The audit trail is the commit point: a record already
    there (written before a restart) is the result; otherwise it is made and written now,
    before status, so a crash in between finds it and status says the same. The run's
    drift against the baseline is judged once, kept in the record, and handed back in ``drifts``."""
    audit_ns = runtime.config.audit_namespace
    chain = await runtime.kube.list(path("auditrecords", audit_ns), audit.chain_selector(validation))
    existing = audit.find_run(chain, record.name)
    if existing is not None:
        if drifts is not None:
            kept = existing["spec"].get("drift")
            drifts[record.name] = Drift.model_validate(kept) if kept else None
        return RunRecord.model_validate(existing["spec"]["run"])
    final = finish_record(record, result, validation, now)
    cohort = dataset.status.cohort if dataset is not None and dataset.status is not None else None
    earlier: list[Mapping[str, Any]] = list(chain)
    judged = drift_mod.assess(earlier, final, cohort, validation.spec.drift)
    if drifts is not None:
        drifts[record.name] = judged
    policy_name = policy.metadata.get("name") if policy else None
    body = audit.audit_record(
        validation, final, algorithm, dataset, policy_name, audit.recorded_by(),
        chain_records=chain, audit_namespace=audit_ns, recorded_at=now,
        evidence=result.report.evidence if result.report is not None else None,
        drift=judged,
        approvals=approvals,
    )
    made, created = await runtime.kube.create(path("auditrecords", audit_ns), body)
    if not created and (made.get("spec") or {}).get("hash") != body["spec"]["hash"]:
        # Another writer took this place in the chain first (the chain's names are its
        # sequence numbers): fail the pass, the next one links after it.
        chain_id = validation.metadata["uid"]
        raise KubeError(409, f"audit chain {chain_id} moved on", "POST", path("auditrecords", audit_ns))
    runtime.crash("after-audit-write")
    return final


async def ensure_audit_namespace(runtime: Runtime, logger: Any) -> None:
    """The chart creates (and keeps) the audit namespace; a development cluster may not have
    it yet, so create it where allowed. Where not (the chart's RBAC), say what is missing:
    every run's conclusion fails until it exists, so no run goes unrecorded."""
    name = runtime.config.audit_namespace
    try:
        if await runtime.kube.get(path("namespaces", None, name)) is not None:
            return
        labels = {layout.LABEL_COMPONENT: audit.COMPONENT_AUDIT}
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        await runtime.kube.create(path("namespaces"), body)
        logger.info(f"created the audit namespace {name}")
    except KubeError as exc:
        logger.error(f"audit namespace {name}: {exc}; runs cannot be recorded (and so not concluded) until it exists")

