"""AuditRecord: the permanent record of one finished run.

A Validation's status keeps only its last ``historyLimit`` runs and goes with the
Validation; the audit trail keeps every run, unchangeable, for post-market
surveillance and the AI Act's record keeping. The operator writes one per run;
nothing edits it (a CEL rule refuses any change); retention is the region's
decision (delete rights in RBAC), never the operator's.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from lightbox.api.common import KubeObject, age_column, cel, validations
from lightbox.api.results import Model
from lightbox.api.validation import AcceptanceCriterion, RunRecord


class AuditedValidation(Model):
    """The Validation the run belongs to (by uid, since a name can be reused)."""

    name: str = Field(max_length=253)
    uid: str = Field(max_length=64)


class AuditedAlgorithm(Model):
    """The Algorithm as it stood when the run was recorded (absent fields: it was gone)."""

    name: str = Field(max_length=253)
    vendor: str | None = Field(default=None, max_length=128)
    product: str | None = Field(default=None, max_length=128)
    version: str | None = Field(default=None, max_length=64)
    image: str | None = Field(default=None, max_length=512, description="The Algorithm's image; spec.run.image is what ran.")
    ce_class: str | None = Field(default=None, max_length=8, description="EU MDR risk class.")
    udi: str | None = Field(default=None, max_length=256, description="Unique Device Identifier (UDI-DI).")


class AuditedDataset(Model):
    """The Dataset the run read."""

    name: str = Field(max_length=253)
    content_hash: str | None = Field(default=None, max_length=80, description="sha256 of the verified tree.")
    case_count: int | None = Field(default=None, ge=0)


class AuditRecordSpec(Model):
    """What ran, on what, under which protocol and policy, and what came out."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self == oldSelf", "an AuditRecord cannot be changed once written", reason="FieldValueForbidden")
        )
    }

    validation: AuditedValidation
    run: RunRecord = Field(description="The finished run: phase, reason, timings, metrics, criteria, verdict.")
    algorithm: AuditedAlgorithm
    dataset: AuditedDataset
    acceptance: list[AcceptanceCriterion] = Field(
        default_factory=list, max_length=32, description="The acceptance criteria the verdict was judged by."
    )
    policy: str | None = Field(default=None, max_length=253, description="The SandboxPolicy that admitted the run.")
    recorded_by: str = Field(max_length=128, description="The operator and its version.")


class AuditRecord(KubeObject):
    """The permanent, unchangeable record of one Lightbox run (the audit trail)."""

    kind_name: ClassVar[str] = "AuditRecord"
    plural: ClassVar[str] = "auditrecords"
    short_names: ClassVar[tuple[str, ...]] = ("lbaudit",)
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    printer_columns: ClassVar[tuple[dict, ...]] = (
        {"name": "Validation", "type": "string", "jsonPath": ".spec.validation.name"},
        {"name": "Run", "type": "integer", "jsonPath": ".spec.run.number"},
        {"name": "Phase", "type": "string", "jsonPath": ".spec.run.phase"},
        {"name": "Reason", "type": "string", "jsonPath": ".spec.run.reason"},
        {"name": "Verdict", "type": "string", "jsonPath": ".spec.run.verdict"},
        {"name": "Algorithm", "type": "string", "jsonPath": ".spec.algorithm.version"},
        {"name": "Dataset Hash", "type": "string", "jsonPath": ".spec.dataset.contentHash", "priority": 1},
        age_column(),
    )

    kind: Literal["AuditRecord"] = "AuditRecord"
    spec: AuditRecordSpec
