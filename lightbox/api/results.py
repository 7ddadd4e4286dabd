"""What the trusted scorer reports: the only data that leaves a sandbox run.

The scorer writes one ``ScoreReport`` as JSON to its termination message
(Kubernetes keeps at most 4096 bytes of it), and the operator validates it with
this same model before copying it into a Validation's status. Only aggregate
numbers fit here: no case ids, no free text written by the vendor.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from lightbox.api.evidence import Evidence

TERMINATION_MESSAGE_LIMIT = 4096

MetricName = Literal[
    "auc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "youdenThreshold",
    "brier",
    "ece",
    "dice",
    "iou",
    "hd95",
    "frocSensitivity",
]

#: Metrics whose values are probabilities or proportions, so thresholds on them live in [0, 1].
UNIT_INTERVAL_METRICS: frozenset[str] = frozenset(
    {
        "auc",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "youdenThreshold",
        "brier",
        "ece",
        "dice",
        "iou",
        "frocSensitivity",
    }
)


class Model(BaseModel):
    """Base for every API model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class MetricValue(Model):
    """A point estimate with its confidence interval."""

    value: float = Field(description="Point estimate.")
    lower: float | None = Field(default=None, description="Lower bound of the confidence interval.")
    upper: float | None = Field(default=None, description="Upper bound of the confidence interval.")
    method: str | None = Field(
        default=None,
        max_length=32,
        description="How the interval was computed: delong, obuchowski (DeLong for cases clustered by patient), "
        "bootstrap, wilson, percentile.",
    )
    interval_unavailable: Literal["noCases", "tooFewCases", "noVariation"] | None = Field(
        default=None,
        description="Why no interval is given where one is computed: noCases (nothing to estimate from), tooFewCases "
        "(below the minimum cases per class, cases or clusters in docs/statistics.md), noVariation (the data show no "
        "spread "
        "to estimate one from). A criterion on a bound is then Inconclusive.",
    )


class FailureSummary(Model):
    """How many cases could not be scored, and why (counts only; case ids stay on site)."""

    missing: int = Field(default=0, ge=0, description="Cases with no prediction.")
    unreadable: int = Field(default=0, ge=0, description="Predictions or masks that could not be parsed.")
    nan: int = Field(default=0, ge=0, description="Predictions that were NaN or out of range.")


class SubgroupResult(Model):
    """Metrics for one subgroup, or a note that it was too small to report."""

    n: int = Field(ge=0, description="Cases in the subgroup (0 when suppressed, so the size does not leak either).")
    suppressed: bool = Field(
        default=False,
        description="True when the subgroup is below the policy's minimum size, or is the smallest other group of a "
        "dimension where only one was (else that one's size would follow from the total).",
    )
    metrics: dict[str, MetricValue] = Field(default_factory=dict, description="Metrics for this subgroup.")


class ReliabilityBin(Model):
    """One fixed calibration bin [lower, upper) as released: the count in doubling bands from the
    policy's minimum cell, the rates on the calibration grid, all None below that cell
    (docs/covert-channel.md, "Curves")."""

    lower: float = Field(ge=0, le=1)
    upper: float = Field(ge=0, le=1)
    count: int | None = Field(
        default=None, ge=0, description="Cases in the bin, rounded up to a doubling band; None when suppressed."
    )
    mean_predicted: float | None = Field(
        default=None, ge=0, le=1, description="Mean predicted probability, on a 0.05 grid."
    )
    observed_rate: float | None = Field(default=None, ge=0, le=1, description="Observed positive rate, on a 0.05 grid.")
    suppressed: bool = Field(
        default=False, description="True when fewer cases than the policy's minimum cell fell in the bin."
    )


class HistogramBin(Model):
    """A fixed bin of a per-case distribution (never per-case values): count banded as above."""

    lower: float
    upper: float
    count: int | None = Field(
        default=None, ge=0, description="Cases in the bin, rounded up to a doubling band; None when suppressed."
    )
    suppressed: bool = False


class ScoreReport(Model):
    """Aggregate result of one sandbox run, as written by the trusted scorer."""

    contract_version: Literal["v1"] = Field(default="v1", description="Vendor contract version the run used.")
    task: Literal["classification", "detection", "segmentation"] = Field(description="The algorithm's task.")
    cases: int = Field(ge=0, description="Cases in the dataset.")
    scored: int = Field(ge=0, description="Cases that were scored.")
    failures: FailureSummary = Field(default_factory=FailureSummary, description="Cases that could not be scored.")
    confidence_level: float = Field(default=0.95, gt=0, lt=1, description="Confidence level of every interval.")
    metrics: dict[str, MetricValue] = Field(default_factory=dict, description="Metrics over all scored cases.")
    subgroups: dict[str, dict[str, SubgroupResult]] = Field(
        default_factory=dict, description="Per dimension (sex, ageBand, manufacturer, site), per group."
    )
    roc: list[tuple[float, float]] = Field(
        default_factory=list, description="Down-sampled ROC curve as (false positive rate, true positive rate) points."
    )
    reliability: list[ReliabilityBin] = Field(
        default_factory=list, max_length=10, description="Reliability diagram on ten fixed bins (classification)."
    )
    froc: list[tuple[float, float]] = Field(
        default_factory=list,
        max_length=16,
        description="FROC curve as (false positives per image, sensitivity) at fixed false-positive rates (detection).",
    )
    dice_histogram: list[HistogramBin] = Field(
        default_factory=list, max_length=10, description="Per-case Dice on ten fixed bins of width 0.1 (segmentation)."
    )
    duration_seconds: float | None = Field(default=None, ge=0, description="Wall time of the vendor step.")
    evidence: Evidence | None = Field(
        default=None,
        description="Sufficient statistics for pooling across regions (classification; docs/federation.md).",
    )

    def to_termination_message(self) -> str:
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            raise ValueError(
                f"score report is {len(text.encode())} bytes; the termination message holds {TERMINATION_MESSAGE_LIMIT}"
            )
        return text
