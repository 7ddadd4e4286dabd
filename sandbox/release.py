"""What of a score report may leave the sandbox: the covert-channel bound (docs/covert-channel.md).

The vendor's container sees the studies, so anything in the report it controls directly is a
channel out of the firewall on every scheduled run: every score at 0.050 made the reported
Youden threshold 0.05, which decoded to one case's age and sex. Before the report leaves, values
the vendor sets directly are put on fixed grids, counts it controls (failed cases, hence the
scored count) are rounded up to doubling bands from the policy's minimum cell, and no metric is reported
over fewer scored cases than that cell. The exact report stays in the scorer's results.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lightbox.api.results import FailureSummary, HistogramBin, MetricValue, ReliabilityBin, ScoreReport

#: A score the vendor wrote, reported as an operating point: the nearest multiple of this.
THRESHOLD_GRID = 0.05
#: Calibration metrics (values and bounds): with every score at one value c they are functions of
#: c alone, so a finer grid gives c back (on 0.01, Brier and ECE together resolved it to about 0.007).
CALIBRATION_GRID = 0.05
#: The ROC curve: true-positive rate at these false-positive rates only (never the vendor's
#: number of distinct scores), each rate to ROC_TPR_GRID.
ROC_FPR_GRIDS = (0.1, 0.25)
ROC_TPR_GRID = 0.01
#: The FROC curve: sensitivity at these false positives per image only (the seven of the
#: LUNA16 / ANODE09 competition score), each on ROC_TPR_GRID.
FROC_FP_POINTS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Per-case Dice is released as counts on these ten fixed bins, never as values.
DICE_BIN_WIDTH = 0.1
THRESHOLD_METRICS = frozenset({"youdenThreshold"})
CALIBRATION_METRICS = frozenset({"brier", "ece"})


def to_grid(value: float, step: float) -> float:
    """The multiple of ``step`` nearest ``value``, as the short decimal it is."""
    decimals = max(0, -math.floor(math.log10(step)) + 1)
    return round(round(value / step) * step, decimals)


def band_up(count: int, width: int) -> int:
    """0 stays 0; any other count becomes the smallest of width, 2*width, 4*width, ... not below
    it: an upper bound, in bands that double, so a count of N cases takes about log2(log2(N/width))
    bits rather than log2(N) (the report caps it at the number of cases, which is not the vendor's)."""
    if count <= 0:
        return 0
    band = width
    while band < count:
        band *= 2
    return band


def roc_on_grid(fpr: Sequence[float], tpr: Sequence[float], step: float) -> list[tuple[float, float]]:
    """The ROC curve at false-positive rates 0, step, ..., 1: at each, the highest true-positive
    rate reached without exceeding it (the curve is a step function), on ROC_TPR_GRID."""
    points = []
    for i in range(round(1 / step) + 1):
        at = min(1.0, i * step)
        reached = [t for f, t in zip(fpr, tpr, strict=True) if f <= at + 1e-12]
        points.append((to_grid(at, 0.01), to_grid(max(reached) if reached else 0.0, ROC_TPR_GRID)))
    return points


def _on_grid(metric: MetricValue, step: float) -> MetricValue:
    def g(x: float | None) -> float | None:
        return None if x is None else to_grid(x, step)

    return metric.model_copy(update={"value": g(metric.value), "lower": g(metric.lower), "upper": g(metric.upper)})


def release_metrics(metrics: dict[str, MetricValue]) -> dict[str, MetricValue]:
    out = {}
    for name, metric in metrics.items():
        if name in THRESHOLD_METRICS:
            out[name] = _on_grid(metric, THRESHOLD_GRID)
        elif name in CALIBRATION_METRICS:
            out[name] = _on_grid(metric, CALIBRATION_GRID)
        else:
            out[name] = metric
    return out


def release(report: ScoreReport, min_cell: int) -> ScoreReport:
    """The report as it may leave the sandbox (the ROC curve is added by the scorer's fit_report,
    from roc_on_grid). ``min_cell``: the policy's minimum reported subgroup size."""
    failures = report.failures
    failed = report.cases - report.scored
    def banded(count: int) -> int:
        return min(report.cases, band_up(count, min_cell))

    released_failures = FailureSummary(
        missing=banded(failures.missing), unreadable=banded(failures.unreadable), nan=banded(failures.nan)
    )
    scored = report.cases - banded(failed)
    enough = report.scored >= min_cell
    return report.model_copy(
        update={
            "failures": released_failures,
            "scored": scored,
            "metrics": release_metrics(report.metrics) if enough else {},
            "subgroups": {
                dim: {g: r.model_copy(update={"metrics": release_metrics(r.metrics)}) for g, r in groups.items()}
                for dim, groups in report.subgroups.items()
            },
            "roc": [],
            "reliability": [],
            "froc": [],
            "dice_histogram": [],
        }
    )


def reliability_released(bins: Sequence[Mapping[str, float]], min_cell: int, n_bins: int = 10) -> list[ReliabilityBin]:
    """The reliability diagram on its fixed bins (``bins`` as the scorer's calibration() gives
    them: lower, upper, count, mean_predicted, observed_rate; empty bins absent). A bin under
    ``min_cell`` cases is marked suppressed with nothing else; the others get their count in
    doubling bands and both rates on CALIBRATION_GRID, like Brier and ECE."""
    by_lower = {to_grid(float(b["lower"]), 1 / n_bins): b for b in bins}
    out = []
    for i in range(n_bins):
        lower, upper = to_grid(i / n_bins, 0.01), to_grid((i + 1) / n_bins, 0.01)
        b = by_lower.get(lower)
        count = int(b["count"]) if b else 0
        if b is None or count == 0:
            out.append(ReliabilityBin(lower=lower, upper=upper, count=0))
        elif count < min_cell:
            out.append(ReliabilityBin(lower=lower, upper=upper, suppressed=True))
        else:
            out.append(
                ReliabilityBin(
                    lower=lower,
                    upper=upper,
                    count=band_up(count, min_cell),
                    mean_predicted=to_grid(float(b["mean_predicted"]), CALIBRATION_GRID),
                    observed_rate=to_grid(float(b["observed_rate"]), CALIBRATION_GRID),
                )
            )
    return out


def froc_released(fp_per_image: Sequence[float], sensitivity: Sequence[float]) -> list[tuple[float, float]]:
    """Sensitivity at FROC_FP_POINTS only: the highest reached without exceeding each rate (the
    curve is a step function), on ROC_TPR_GRID; none when sensitivity is undefined (no lesions)."""
    pairs = [
        (float(f), float(s))
        for f, s in zip(fp_per_image, sensitivity, strict=True)
        if math.isfinite(s) and math.isfinite(f)
    ]
    if not pairs:
        return []
    return [
        (at, to_grid(max((s for f, s in pairs if f <= at + 1e-12), default=0.0), ROC_TPR_GRID)) for at in FROC_FP_POINTS
    ]


def dice_histogram(dice: Sequence[float], min_cell: int) -> list[HistogramBin]:
    """Counts of per-case Dice on ten fixed bins of width DICE_BIN_WIDTH (the last includes 1),
    banded and suppressed like the reliability bins; cases with no finite Dice are left out."""
    n_bins = round(1 / DICE_BIN_WIDTH)
    counts = [0] * n_bins
    for d in dice:
        if math.isfinite(d):
            counts[min(n_bins - 1, max(0, int(d / DICE_BIN_WIDTH + 1e-9)))] += 1
    out = []
    for i, c in enumerate(counts):
        lower, upper = to_grid(i * DICE_BIN_WIDTH, 0.01), to_grid((i + 1) * DICE_BIN_WIDTH, 0.01)
        if 0 < c < min_cell:
            out.append(HistogramBin(lower=lower, upper=upper, suppressed=True))
        else:
            out.append(HistogramBin(lower=lower, upper=upper, count=band_up(c, min_cell)))
    return out
