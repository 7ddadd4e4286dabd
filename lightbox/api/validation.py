"""Validation: one algorithm scored on one dataset against acceptance criteria."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from lightbox.api.common import Condition, KubeObject, ObjectReference, age_column, cel, validations
from lightbox.api.results import UNIT_INTERVAL_METRICS, FailureSummary, MetricName, MetricValue, Model, SubgroupResult
from lightbox.api.run import BootstrapSettings, SubgroupDimension

# Five fields of minutes, hours, day of month, month, day of week, or a macro.
CRON = (
    r"^(@(yearly|annually|monthly|weekly|daily|hourly)|"
    r"([0-9*/,-]+|\?)\s+([0-9*/,-]+)\s+([0-9*/,?LW-]+)\s+([0-9A-Za-z*/,-]+)\s+([0-9A-Za-z*/,?L#-]+))$"
)

Verdict = Literal["Passed", "Failed", "Inconclusive"]
Phase = Literal["Pending", "Blocked", "Queued", "Running", "Succeeded", "Failed", "Scheduled"]

_UNIT_METRICS = ", ".join(f"'{m}'" for m in sorted(UNIT_INTERVAL_METRICS))


class AcceptanceCriterion(Model):
    """One pass/fail rule, e.g. the lower 95% bound of AUC must be at least 0.85."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel(
                f"!(self.metric in [{_UNIT_METRICS}]) || (self.threshold >= 0.0 && self.threshold <= 1.0)",
                "threshold must be between 0 and 1 for proportions and probabilities (all metrics except hd95)",
                field_path=".threshold",
            ),
            cel(
                "self.metric != 'hd95' || self.threshold >= 0.0",
                "threshold for hd95 is a distance in millimetres and must not be negative",
                field_path=".threshold",
            ),
        )
    }

    metric: MetricName = Field(description="Metric the rule is about, e.g. auc, sensitivity, dice, hd95.")
    comparison: Literal[">=", ">", "<=", "<"] = Field(
        default=">=", description="How the observed value must compare to the threshold."
    )
    threshold: float = Field(description="Threshold; within [0, 1] for every metric but hd95 (millimetres).")
    bound: Literal["point", "lower", "upper"] = Field(
        default="point",
        description="Compare the point estimate, or the lower/upper confidence bound (conservative checks).",
    )


# The study protocol is fixed once the Validation exists: a threshold moved
# after the results are known is not a validation, and each run's record must
# mean what it meant when it ran. Schedule, history, suspend and queue may change.
PROTOCOL_FIELDS = ("algorithmRef", "datasetRef", "metrics", "acceptance", "subgroups", "bootstrap", "confidenceLevel")


def _unchanged(field: str) -> dict[str, str]:
    return cel(
        f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})",
        f"{field} cannot change once the Validation exists (its protocol is fixed before results are seen); "
        "create a new Validation instead. schedule, historyLimit, suspend and queueName may change.",
        field_path=f".{field}",
        reason="FieldValueForbidden",
    )


class ValidationSpec(Model):
    """Which algorithm on which dataset, scored how, and how often."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel(
                "!has(self.acceptance) || !has(self.metrics) || size(self.metrics) == 0 || "
                "self.acceptance.all(c, c.metric in self.metrics)",
                "every acceptance criterion's metric must also be listed in metrics",
                field_path=".acceptance",
            ),
            *(_unchanged(field) for field in PROTOCOL_FIELDS),
        )
    }

    algorithm_ref: ObjectReference = Field(description="The Algorithm to validate (same namespace).")
    dataset_ref: ObjectReference = Field(description="The Dataset to validate it on (same namespace).")
    metrics: list[MetricName] = Field(
        default_factory=list,
        max_length=12,
        description="Metrics to compute; empty means the task's defaults.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    acceptance: list[AcceptanceCriterion] = Field(
        default_factory=list, max_length=32, description="All must hold for the verdict Passed."
    )
    subgroups: list[SubgroupDimension] = Field(
        default_factory=lambda: ["sex", "ageBand", "manufacturer"],
        max_length=4,
        description="Subgroup dimensions reported separately (sex, ageBand, manufacturer, site).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings, description="Bootstrap settings.")
    confidence_level: float = Field(default=0.95, ge=0.5, le=0.999, description="Confidence level of intervals.")
    schedule: str | None = Field(
        default=None,
        max_length=128,
        description="Cron schedule (5 fields or @daily, @weekly...) for continuous monitoring; empty runs once.",
        json_schema_extra=validations(
            cel(
                f"self.matches(r'{CRON}')",
                "must be a cron expression with 5 fields (minute hour day-of-month month day-of-week) "
                "or one of @yearly, @monthly, @weekly, @daily, @hourly",
            )
        ),
    )
    history_limit: int = Field(default=10, ge=1, le=100, description="Runs kept in status and as Jobs (1 to 100).")
    suspend: bool = Field(default=False, description="When true, no new runs start.")
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        description="Kueue LocalQueue for the run's Job (overrides the policy's).",
    )


class CriterionResult(Model):
    """How one acceptance criterion came out."""

    metric: str = Field(max_length=32)
    bound: str = Field(max_length=8)
    comparison: str = Field(max_length=2)
    threshold: float
    observed: float | None = Field(default=None, description="The value compared (point or bound).")
    outcome: Verdict = Field(description="Passed, Failed or Inconclusive (CI straddles the threshold).")


class RunRecord(Model):
    """One execution of the validation."""

    name: str = Field(max_length=253, description="Run name; also the Job's name.")
    number: int = Field(ge=1, description="1 for the first run, increasing.")
    phase: Literal["Queued", "Running", "Succeeded", "Failed"] = Field(description="Phase of this run.")
    reason: str | None = Field(default=None, max_length=128, description="Why it ended, e.g. DeadlineExceeded.")
    message: str | None = Field(default=None, max_length=2048, description="Explanation of the reason.")
    scheduled_for: datetime | None = Field(default=None, description="The schedule tick this run belongs to.")
    created_at: datetime | None = None
    finished_at: datetime | None = None
    dataset_hash: str | None = Field(default=None, max_length=80, description="Content hash of the data used.")
    image: str | None = Field(default=None, max_length=512, description="Image digest run.")
    cases: int | None = Field(default=None, ge=0)
    scored: int | None = Field(default=None, ge=0)
    failures: FailureSummary | None = None
    metrics: dict[str, MetricValue] | None = Field(default=None, description="Metrics with confidence intervals.")
    subgroups: dict[str, dict[str, SubgroupResult]] | None = Field(default=None, description="Per-subgroup metrics.")
    criteria: list[CriterionResult] | None = Field(default=None, description="Acceptance criteria outcomes.")
    verdict: Verdict | None = Field(default=None, description="Passed, Failed or Inconclusive.")


class ValidationStatus(Model):
    """Where the validation stands and what its runs found."""

    phase: Phase | None = Field(default=None, description="Pending, Blocked, Queued, Running, Succeeded, Failed, Scheduled.")
    verdict: Verdict | None = Field(default=None, description="Verdict of the latest finished run.")
    summary: str | None = Field(default=None, max_length=128, description="Main metric of the latest run, e.g. auc 0.91 [0.87, 0.94].")
    conditions: list[Condition] | None = Field(default=None, description="Admitted, Ready and friends.")
    runs: list[RunRecord] | None = Field(default=None, description="Recent runs, newest last (historyLimit).")
    last_run_time: datetime | None = None
    next_run_time: datetime | None = None
    observed_generation: int | None = None


class Validation(KubeObject):
    """An algorithm validated on a local dataset, once or continuously on a schedule."""

    kind_name: ClassVar[str] = "Validation"
    plural: ClassVar[str] = "validations"
    short_names: ClassVar[tuple[str, ...]] = ("val",)
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    printer_columns: ClassVar[tuple[dict, ...]] = (
        {"name": "Algorithm", "type": "string", "jsonPath": ".spec.algorithmRef.name"},
        {"name": "Dataset", "type": "string", "jsonPath": ".spec.datasetRef.name"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Verdict", "type": "string", "jsonPath": ".status.verdict"},
        {"name": "Metric", "type": "string", "jsonPath": ".status.summary"},
        {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule", "priority": 1},
        {"name": "Last Run", "type": "date", "jsonPath": ".status.lastRunTime"},
        age_column(),
    )

    kind: Literal["Validation"] = "Validation"
    spec: ValidationSpec
    status: ValidationStatus | None = None
