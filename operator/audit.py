"""The audit trail: one AuditRecord per finished run. Pure.

The record's name carries the Validation's uid, so a Validation deleted and
created again under the same name starts a new trail instead of colliding with
the old one, and a retry after a restart finds its own record (create-if-absent).
It has no owner reference: deleting the Validation must not delete its history.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata
from typing import Any

from lightbox.api import run as layout
from lightbox.api.algorithm import Algorithm
from lightbox.api.audit import AuditedAlgorithm, AuditedDataset, AuditedValidation, AuditRecord, AuditRecordSpec
from lightbox.api.dataset import Dataset
from lightbox.api.validation import RunRecord, Validation
from lightbox.operator import builders

COMPONENT_AUDIT = "audit"


@cache
def recorded_by() -> str:
    """The operator's name and version, as it signs its records."""
    try:
        version = metadata.version("lightbox")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"lightbox-operator/{version}"


def record_name(validation: Validation, run: str) -> str:
    return f"{run}-{validation.metadata['uid'][:8]}"


def audit_record(
    validation: Validation,
    record: RunRecord,
    algorithm: Algorithm | None,
    dataset: Dataset | None,
    policy: str | None,
    signer: str,
) -> dict[str, Any]:
    """The AuditRecord of one finished run, as a manifest."""
    meta = validation.metadata
    algo = AuditedAlgorithm(name=validation.spec.algorithm_ref.name)
    if algorithm is not None:
        regulatory = algorithm.spec.regulatory
        algo = algo.model_copy(
            update={
                "vendor": algorithm.spec.vendor,
                "product": algorithm.spec.product,
                "version": algorithm.spec.version,
                "image": algorithm.spec.image,
                "ce_class": regulatory.ce_class if regulatory else None,
                "udi": regulatory.udi if regulatory else None,
            }
        )
    data = AuditedDataset(name=validation.spec.dataset_ref.name)
    if dataset is not None and dataset.status is not None:
        data = data.model_copy(update={"content_hash": dataset.status.content_hash, "case_count": dataset.status.case_count})
    spec = AuditRecordSpec(
        validation=AuditedValidation(name=meta["name"], uid=meta["uid"]),
        run=record,
        algorithm=algo,
        dataset=data,
        acceptance=validation.spec.acceptance,
        policy=policy,
        recorded_by=signer,
    )
    body = AuditRecord(
        metadata={
            "name": record_name(validation, record.name),
            "namespace": meta["namespace"],
            "labels": {
                layout.LABEL_COMPONENT: COMPONENT_AUDIT,
                layout.LABEL_VALIDATION: builders.label_value(meta["name"]),
                layout.LABEL_RUN: builders.label_value(record.name),
            },
        },
        spec=spec,
    )
    return body.model_dump(mode="json", by_alias=True, exclude_none=True)
