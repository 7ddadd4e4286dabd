"""AuditRecord: the permanent record of one finished run, chained by hash.

A Validation's status keeps only its last ``historyLimit`` runs and goes with the
Validation; the audit trail keeps every run, unchangeable, for post-market
surveillance and the AI Act's record keeping. The operator writes one per run into
the audit namespace (not the Validation's, so deleting that namespace or uninstalling
the chart leaves the history); nothing edits it (a CEL rule refuses any change).
Each record holds its chain's sequence number, the hash of the previous record and
its own (docs/audit.md defines the serialisation), so a removed, altered or
reordered record is found by recomputing. Retention is the region's decision:
``lightbox audit prune`` removes expired records oldest-first and first appends a
RetentionCut record saying where verification now starts; the operator itself
cannot delete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from lightbox.api.common import KubeObject, age_column, cel, validations
from lightbox.api.evidence import Evidence
from lightbox.api.results import Model
from lightbox.api.validation import AcceptanceCriterion, RunRecord


class AuditedValidation(Model):
    """The Validation the run belongs to (by uid, since a name can be reused)."""

    name: str = Field(max_length=253)
    uid: str = Field(max_length=64)
    namespace: str | None = Field(default=None, max_length=63, description="Where the Validation lived.")


class AuditedApproval(Model):
    """An AlgorithmApproval counted when the run was recorded (the approver as the API server authenticated them)."""

    name: str = Field(max_length=253, description="The AlgorithmApproval object.")
    approver: str = Field(max_length=253)
    groups: list[str] = Field(default_factory=list, max_length=64)
    approved_at: datetime | None = Field(default=None, description="Its creationTimestamp.")


class AuditedAlgorithm(Model):
    """The Algorithm as it stood when the run was recorded (absent fields: it was gone)."""

    name: str = Field(max_length=253)
    vendor: str | None = Field(default=None, max_length=128)
    product: str | None = Field(default=None, max_length=128)
    version: str | None = Field(default=None, max_length=64)
    image: str | None = Field(
        default=None, max_length=512, description="The Algorithm's image; spec.run.image is what ran."
    )
    ce_class: str | None = Field(default=None, max_length=8, description="EU MDR risk class.")
    udi: str | None = Field(default=None, max_length=256, description="Unique Device Identifier (UDI-DI).")
    approvals: list[AuditedApproval] | None = Field(
        default=None, max_length=64, description="The approvals of this image digest and version that let it run."
    )


class AuditedDataset(Model):
    """The Dataset the run read."""

    name: str = Field(max_length=253)
    content_hash: str | None = Field(default=None, max_length=80, description="sha256 of the verified tree.")
    case_count: int | None = Field(default=None, ge=0)
    cohort: dict[str, dict[str, int]] | None = Field(
        default=None,
        description="Case counts by sex, ageBand, manufacturer and modality when the run read it (input mix).",
    )


class DegradedMetric(Model):
    """A metric whose whole interval lay beyond the baseline's point estimate by more than the tolerance."""

    metric: str = Field(max_length=64)
    baseline: float
    now: float
    lower: float
    upper: float
    tolerance: float = Field(ge=0)


class CohortShift(Model):
    """A cohort dimension whose case mix moved from the baseline's."""

    dimension: str = Field(max_length=64)
    psi: float = Field(ge=0, description="Population stability index.")
    p_value: float = Field(ge=0, le=1, description="Chi-square test of homogeneity.")


class Drift(Model):
    """This run against the Validation's baseline run (the first that passed): operator/drift.py."""

    baseline_run: int = Field(ge=1, description="Run number of the baseline.")
    baseline_sequence: int = Field(ge=1, description="The baseline's place in this chain.")
    compared: list[str] = Field(default_factory=list, max_length=64, description="Metrics both runs report.")
    degraded: list[DegradedMetric] = Field(default_factory=list, max_length=64)
    input_shift: list[CohortShift] = Field(default_factory=list, max_length=16)


SHA256 = r"^sha256:[0-9a-f]{64}$"


class ChainLink(Model):
    """The record's place in its chain: one chain per Validation uid."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel(
                "self.sequence == 1 ? !has(self.previousHash) : has(self.previousHash)",
                "previousHash is required after the first record of a chain and forbidden on the first",
                field_path=".previousHash",
            )
        )
    }

    id: str = Field(max_length=64, description="The chain: the uid of the Validation whose runs it records.")
    sequence: int = Field(ge=1, description="1 for the chain's first record, then one more per record.")
    previous_hash: str | None = Field(
        default=None, pattern=SHA256, max_length=71, description="spec.hash of the record with sequence - 1."
    )


class RetentionCut(Model):
    """Records before ``firstKept`` were removed for retention; verification starts there."""

    first_kept: int = Field(ge=2, description="Sequence of the first record kept; its previousHash is not checked.")
    retention_days: int = Field(ge=1, description="The retention in force when the cut was made.")
    expired_before: datetime = Field(description="Records recorded before this time had expired.")


class AuditRecordSpec(Model):
    """What ran, on what, under which protocol and policy, and what came out; or a retention cut."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self == oldSelf", "an AuditRecord cannot be changed once written", reason="FieldValueForbidden"),
            cel(
                "self.event == 'RunFinished' ? has(self.run) && has(self.algorithm) && has(self.dataset) : "
                "has(self.cut)",
                "a RunFinished record needs run, algorithm and dataset; a RetentionCut record needs cut",
            ),
        )
    }

    event: Literal["RunFinished", "RetentionCut"] = Field(default="RunFinished", description="What the record records.")
    chain: ChainLink
    recorded_at: datetime = Field(description="When the operator (or the pruner) wrote it; retention counts from here.")
    hash: str = Field(
        pattern=SHA256,
        max_length=71,
        description="sha256 of the RFC 8785 (JCS) serialisation of this spec without the hash field (docs/audit.md).",
    )
    validation: AuditedValidation
    run: RunRecord | None = Field(
        default=None, description="The finished run: phase, reason, timings, metrics, criteria, verdict."
    )
    algorithm: AuditedAlgorithm | None = None
    dataset: AuditedDataset | None = None
    cut: RetentionCut | None = None
    evidence: Evidence | None = Field(
        default=None, description="The run's sufficient statistics for pooling across regions (docs/federation.md)."
    )
    drift: Drift | None = Field(
        default=None, description="This run against the baseline; absent when there is none yet."
    )
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
    printer_columns: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Validation", "type": "string", "jsonPath": ".spec.validation.name"},
        {"name": "Namespace Of Validation", "type": "string", "jsonPath": ".spec.validation.namespace", "priority": 1},
        {"name": "Seq", "type": "integer", "jsonPath": ".spec.chain.sequence"},
        {"name": "Event", "type": "string", "jsonPath": ".spec.event", "priority": 1},
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
