"""The audit trail: one AuditRecord per finished run, in the audit namespace, chained. Pure.

Records live in one namespace of their own (``OperatorConfig.audit_namespace``), not
the Validation's, so deleting a run namespace or uninstalling the chart leaves them.
One chain per Validation uid: a Validation deleted and created again under the same
name starts a new chain. A record's name is its chain and sequence number, so two
writers that raced for the same place in a chain collide at the API server (409)
instead of forking it; a retry after a restart finds its run's record by label and
run name. No owner reference: deleting the Validation must not delete its history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from importlib import metadata
from typing import Any

from lightbox import auditchain
from lightbox.api import run as layout
from lightbox.api.algorithm import Algorithm
from lightbox.api.approval import AlgorithmApproval
from lightbox.api.audit import (
    AuditedAlgorithm,
    AuditedApproval,
    AuditedDataset,
    AuditedValidation,
    AuditRecord,
    AuditRecordSpec,
    ChainLink,
    Drift,
)
from lightbox.api.dataset import Dataset
from lightbox.api.evidence import Evidence
from lightbox.api.validation import RunRecord, Validation
from lightbox.operator import builders

COMPONENT_AUDIT = "audit"
DEFAULT_AUDIT_NAMESPACE = "lightbox-audit"
LABEL_CHAIN = f"{layout.GROUP}/chain"
LABEL_VALIDATION_NAMESPACE = f"{layout.GROUP}/validation-namespace"


@cache
def recorded_by() -> str:
    """The operator's name and version, as it signs its records."""
    try:
        version = metadata.version("lightbox")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"lightbox-operator/{version}"


def record_name(chain: str, sequence: int) -> str:
    return f"{chain}-{sequence}"


def chain_selector(validation: Validation) -> str:
    return f"{LABEL_CHAIN}={builders.label_value(validation.metadata['uid'])}"


def find_run(chain_records: Iterable[Mapping[str, Any]], run: str) -> Mapping[str, Any] | None:
    """The record of a run already in the chain (written before a restart), if any."""
    for item in chain_records:
        spec = item.get("spec") or {}
        if spec.get("event", "RunFinished") == "RunFinished" and (spec.get("run") or {}).get("name") == run:
            return item
    return None


def _audited_algorithm(
    validation: Validation, algorithm: Algorithm | None, approvals: Sequence[AlgorithmApproval]
) -> AuditedAlgorithm:
    """What the record keeps of the Algorithm (its name only, when it is gone)."""
    algo = AuditedAlgorithm(name=validation.spec.algorithm_ref.name)
    if algorithm is None:
        return algo
    regulatory = algorithm.spec.regulatory
    return algo.model_copy(
        update={
            "vendor": algorithm.spec.vendor,
            "product": algorithm.spec.product,
            "version": algorithm.spec.version,
            "image": algorithm.spec.image,
            "ce_class": regulatory.ce_class if regulatory else None,
            "udi": regulatory.udi if regulatory else None,
            "approvals": [
                AuditedApproval(
                    name=a.metadata.get("name", ""),
                    approver=a.spec.approver,
                    groups=a.spec.groups,
                    approved_at=a.metadata.get("creationTimestamp"),
                )
                for a in approvals
            ]
            or None,
        }
    )


def _audited_dataset(validation: Validation, dataset: Dataset | None) -> AuditedDataset:
    """What the record keeps of the Dataset (its name only, when it is gone or unverified)."""
    data = AuditedDataset(name=validation.spec.dataset_ref.name)
    if dataset is None or dataset.status is None:
        return data
    return data.model_copy(
        update={
            "content_hash": dataset.status.content_hash,
            "case_count": dataset.status.case_count,
            "cohort": dataset.status.cohort,
        }
    )


def audit_record(
    validation: Validation,
    record: RunRecord,
    algorithm: Algorithm | None,
    dataset: Dataset | None,
    policy: str | None,
    signer: str,
    *,
    chain_records: Sequence[Mapping[str, Any]] = (),
    audit_namespace: str = DEFAULT_AUDIT_NAMESPACE,
    recorded_at: datetime | None = None,
    evidence: Evidence | None = None,
    drift: Drift | None = None,
    approvals: Sequence[AlgorithmApproval] = (),
) -> dict[str, Any]:
    """The AuditRecord of one finished run, as a manifest: the next link of the
    Validation's chain, given the records that chain already has; ``approvals``: those counted for the run."""
    meta = validation.metadata
    algo = _audited_algorithm(validation, algorithm, approvals)
    data = _audited_dataset(validation, dataset)
    chain = ChainLink.model_validate(auditchain.link(chain_records, meta["uid"]))
    when = recorded_at or record.finished_at or record.created_at
    if when is None:
        raise ValueError(
            f"run {record.name} has no finishedAt or createdAt and none was given: its record needs a time"
        )
    spec = AuditRecordSpec(
        event="RunFinished",
        chain=chain,
        recorded_at=when,
        hash="sha256:" + "0" * 64,  # replaced by the seal below
        validation=AuditedValidation(name=meta["name"], uid=meta["uid"], namespace=meta["namespace"]),
        run=record,
        algorithm=algo,
        dataset=data,
        acceptance=validation.spec.acceptance,
        policy=policy,
        recorded_by=signer,
        evidence=evidence,
        drift=drift,
    )
    labels = {
        layout.LABEL_COMPONENT: COMPONENT_AUDIT,
        layout.LABEL_VALIDATION: builders.label_value(meta["name"]),
        LABEL_VALIDATION_NAMESPACE: meta["namespace"],
        LABEL_CHAIN: builders.label_value(meta["uid"]),
        layout.LABEL_RUN: builders.label_value(record.name),
    }
    return _sealed(
        AuditRecord(
            metadata={"name": record_name(meta["uid"], chain.sequence), "namespace": audit_namespace, "labels": labels},
            spec=spec,
        )
    )


def retention_cut(
    chain_records: Sequence[Mapping[str, Any]], cut: Mapping[str, Any], recorded_at: datetime, signer: str
) -> dict[str, Any]:
    """The RetentionCut record appended to a chain before its expired records are removed."""
    last = auditchain.head(chain_records)
    if last is None:
        raise ValueError("a retention cut needs a chain")
    chain_id = last["spec"]["chain"]["id"]
    spec = AuditRecordSpec.model_validate(
        {
            "event": "RetentionCut",
            "chain": auditchain.link(chain_records, chain_id),
            "recordedAt": recorded_at,
            "hash": "sha256:" + "0" * 64,
            "validation": last["spec"]["validation"],
            "cut": cut,
            "recordedBy": signer,
        }
    )
    meta = last["metadata"]
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != layout.LABEL_RUN}
    name = record_name(chain_id, spec.chain.sequence)
    return _sealed(AuditRecord(metadata={"name": name, "namespace": meta["namespace"], "labels": labels}, spec=spec))


def _sealed(record: AuditRecord) -> dict[str, Any]:
    """The manifest with spec.hash over its spec exactly as it is sent (and stored)."""
    body = record.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"] = auditchain.seal(body["spec"])
    return body
