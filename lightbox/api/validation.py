"""Validation: one algorithm scored on one dataset against acceptance criteria."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from lightbox.api.common import (
    QUEUE_NAME,
    Condition,
    KubeObject,
    ObjectReference,
    age_column,
    cel,
    no_control_characters,
    validations,
)
from lightbox.api.drift import DriftSettings
from lightbox.api.results import (
    UNIT_INTERVAL_METRICS,
    FailureSummary,
    HistogramBin,
    MetricName,
    MetricValue,
    Model,
    ReliabilityBin,
    SubgroupResult,
)
from lightbox.api.run import BootstrapSettings, SubgroupDimension

# Cron as the operator's library (croniter) reads it, restricted to the classic
# five fields so that what the API server admits is exactly what runs: each field
# a list of *, a value or a range a-b, each optionally /step, values within the
# field's range (crontab(5)). croniter's extensions (L, W, #, ?, a sixth field)
# are refused. RE2 and Python's re read these patterns alike (tests use both).
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_DAYS = "sun|mon|tue|wed|thu|fri|sat"
CRON_MACROS = ("yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly")


def _cron_field(value: str, step: str) -> str:
    item = rf"(\*|{value}(-{value})?)(/{step})?"
    return rf"{item}(,{item})*"


# (name, allowed values as told to the user, value pattern, step pattern)
CRON_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("minute", "0-59", _cron_field(r"[0-5]?[0-9]", r"([1-9]|[1-5][0-9])")),
    ("hour", "0-23", _cron_field(r"([01]?[0-9]|2[0-3])", r"([1-9]|1[0-9]|2[0-3])")),
    ("day-of-month", "1-31", _cron_field(r"(0?[1-9]|[12][0-9]|3[01])", r"([1-9]|[12][0-9]|3[01])")),
    ("month", "1-12 or jan-dec", _cron_field(rf"(0?[1-9]|1[0-2]|(?i:{_MONTHS}))", r"([1-9]|1[0-2])")),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or sun-sat", _cron_field(rf"([0-7]|(?i:{_DAYS}))", r"[1-7]")),
)
CRON = rf"^(@({'|'.join(CRON_MACROS)})| *{' +'.join(p for _, _, p in CRON_FIELDS)} *)$"
CRON_HELP = (
    "must be a cron expression with 5 fields: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12 or jan-dec) "
    "day-of-week (0-7 or sun-sat), each *, a value, a range a-b or a list a,b,c, optionally with a step /n; "
    f"or one of {', '.join('@' + m for m in CRON_MACROS)}"
)


def _cron_message() -> str:
    """A CEL expression naming the first field of a schedule that is out of range (never echoing it)."""
    fields = "self.split(' ').filter(x, x != '')"
    parts = [
        f"self.startsWith('@') ? 'must be one of {', '.join('@' + m for m in CRON_MACROS)} (lowercase)'",
        f"size({fields}) != 5 ? 'must be a cron expression with exactly 5 fields separated by spaces "
        "(minute hour day-of-month month day-of-week)'",
    ]
    for index, (name, allowed, pattern) in enumerate(CRON_FIELDS):
        parts.append(
            f"!{fields}[{index}].matches(r'^{pattern}$') ? 'field {index + 1} ({name}) must be {allowed}: *, a value, "
            "a range a-b or a list a,b,c, optionally with a step /n within the range'"
        )
    return " : ".join(parts) + f" : '{CRON_HELP}'"

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
                message_expression="self.threshold > 1.0 ? "
                "'threshold must be between 0 and 1 for proportions and probabilities (all metrics except hd95): "
                "it is above 1' : 'threshold must be between 0 and 1 for proportions and probabilities "
                "(all metrics except hd95): it is below 0'",
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


def _default_subgroups() -> list[SubgroupDimension]:
    return ["sex", "ageBand", "manufacturer"]


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
        default_factory=_default_subgroups,
        max_length=4,
        description="Subgroup dimensions reported separately (sex, ageBand, manufacturer, site; photos: bodySite, "
        "skinType; slides: specimenSite, stain).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings, description="Bootstrap settings.")
    confidence_level: float = Field(default=0.95, ge=0.5, le=0.999, description="Confidence level of intervals.")
    schedule: str | None = Field(
        default=None,
        max_length=128,
        description="Cron schedule (5 fields or @daily, @weekly...) for continuous monitoring; empty runs once.",
        json_schema_extra=validations(
            no_control_characters(),
            cel(f"self.matches(r'{CRON}')", CRON_HELP, message_expression=_cron_message()),
        ),
    )
    history_limit: int = Field(default=10, ge=1, le=100, description="Runs kept in status and as Jobs (1 to 100).")
    drift: DriftSettings = Field(
        default_factory=DriftSettings,
        description="Drift against a baseline run: Degraded and InputShift (docs/drift.md).",
    )
    suspend: bool = Field(default=False, description="When true, no new runs start.")
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=QUEUE_NAME,
        description="Kueue LocalQueue for the run's Job (overrides the policy's): a lowercase DNS-1123 name.",
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
    roc: list[tuple[float, float]] | None = Field(
        default=None, max_length=21, description="ROC curve at fixed false-positive rates, as released by the scorer."
    )
    reliability: list[ReliabilityBin] | None = Field(
        default=None, max_length=10, description="Released reliability bins."
    )
    froc: list[tuple[float, float]] | None = Field(default=None, max_length=16, description="Released FROC points.")
    dice_histogram: list[HistogramBin] | None = Field(
        default=None, max_length=10, description="Released per-case Dice histogram."
    )
    criteria: list[CriterionResult] | None = Field(default=None, description="Acceptance criteria outcomes.")
    verdict: Verdict | None = Field(default=None, description="Passed, Failed or Inconclusive.")


class ValidationStatus(Model):
    """Where the validation stands and what its runs found."""

    phase: Phase | None = Field(
        default=None, description="Pending, Blocked, Queued, Running, Succeeded, Failed, Scheduled."
    )
    verdict: Verdict | None = Field(default=None, description="Verdict of the latest finished run.")
    summary: str | None = Field(
        default=None, max_length=128, description="Main metric of the latest run, e.g. auc 0.91 [0.87, 0.94]."
    )
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
    printer_columns: ClassVar[tuple[dict[str, Any], ...]] = (
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
