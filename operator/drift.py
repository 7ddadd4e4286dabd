"""Drift against a baseline run: a metric worse beyond doubt, or an input mix that moved. Pure.

A scheduled Validation compares each run with its baseline (the first passing run, or one
pinned in spec). Two findings, each meant for a condition, an Event, a Prometheus series and a
line in the report:

* ``Degraded``: a metric whose whole interval lies beyond the baseline's point estimate by more
  than a tolerance, on the bad side (below for higher-is-better metrics, above for the others).
  Requiring the whole interval keeps an unchanged algorithm from being flagged by resampling
  noise; the tolerance keeps a tiny real change from being flagged on a huge dataset.
* ``InputShift``: the case mix of one cohort dimension (sex, ageBand, manufacturer, modality)
  moved: population stability index above a threshold (0.25 is the customary "significant
  shift"), or a chi-square test of homogeneity below a p-value threshold. Both are needed in
  practice: PSI ignores sample size, the chi-square test flags trivial shifts in big cohorts,
  so the default asks for both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightbox.api.audit import CohortShift, DegradedMetric, Drift
from lightbox.api.drift import DriftSettings
from lightbox.api.results import MetricValue
from lightbox.api.validation import RunRecord

LOWER_IS_BETTER = frozenset({"brier", "ece", "hd95"})
DEFAULT_TOLERANCE = 0.02
DEFAULT_PSI = 0.25
DEFAULT_P_VALUE = 0.01
PSI_FLOOR = 0.5  # pseudo-count per group, so a group empty on one side gives a finite PSI


@dataclass(frozen=True)
class Degradation:
    metric: str
    baseline: float
    now: float
    lower: float
    upper: float
    tolerance: float

    def message(self) -> str:
        return (
            f"{self.metric} {self.now:.3f} [{self.lower:.3f}, {self.upper:.3f}] is worse than the baseline "
            f"{self.baseline:.3f} by more than {self.tolerance:g} over its whole interval"
        )


def degraded(
    metric: str, baseline: MetricValue, now: MetricValue, tolerance: float = DEFAULT_TOLERANCE
) -> Degradation | None:
    """A Degradation when ``now``'s whole interval is beyond baseline ± tolerance on the bad side.
    Without an interval (too few cases) nothing is claimed."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if now.lower is None or now.upper is None:
        return None
    if metric in LOWER_IS_BETTER:
        worse = now.lower > baseline.value + tolerance
    else:
        worse = now.upper < baseline.value - tolerance
    return Degradation(metric, baseline.value, now.value, now.lower, now.upper, tolerance) if worse else None


def degradations(
    baseline: Mapping[str, MetricValue], now: Mapping[str, MetricValue], tolerance: float = DEFAULT_TOLERANCE
) -> list[Degradation]:
    """Every metric both runs report that degraded, in name order."""
    found = (degraded(m, baseline[m], now[m], tolerance) for m in sorted(set(baseline) & set(now)))
    return [d for d in found if d is not None]


def psi(baseline: Mapping[str, int], now: Mapping[str, int]) -> float:
    """Population stability index Σ (p − q) ln(p / q) over the union of groups."""
    groups = sorted(set(baseline) | set(now))
    b_total = sum(baseline.get(g, 0) + PSI_FLOOR for g in groups)
    n_total = sum(now.get(g, 0) + PSI_FLOOR for g in groups)
    out = 0.0
    for g in groups:
        q = (baseline.get(g, 0) + PSI_FLOOR) / b_total
        p = (now.get(g, 0) + PSI_FLOOR) / n_total
        out += (p - q) * math.log(p / q)
    return out


def homogeneity_p(baseline: Mapping[str, int], now: Mapping[str, int]) -> float:
    """p-value of the chi-square test that both runs drew from one mix (groups empty in both dropped)."""
    groups = [g for g in sorted(set(baseline) | set(now)) if baseline.get(g, 0) + now.get(g, 0) > 0]
    if len(groups) < 2 or not sum(baseline.values()) or not sum(now.values()):
        return 1.0
    table = [[baseline.get(g, 0) for g in groups], [now.get(g, 0) for g in groups]]
    # Imported here: scipy.stats is ~85 MiB resident, which an operator whose runs never reach
    # a drift comparison should not carry (docs/performance.md).
    from scipy.stats import chi2_contingency

    return float(chi2_contingency(table, correction=False).pvalue)


@dataclass(frozen=True)
class Shift:
    dimension: str
    psi: float
    p_value: float

    def message(self) -> str:
        return (
            f"the {self.dimension} mix moved from the baseline's: PSI {self.psi:.3f}, chi-square p = {self.p_value:.2g}"
        )


def input_shifts(
    baseline: Mapping[str, Mapping[str, int]],
    now: Mapping[str, Mapping[str, int]],
    psi_threshold: float = DEFAULT_PSI,
    p_threshold: float = DEFAULT_P_VALUE,
) -> list[Shift]:
    """Cohort dimensions (both runs have) whose mix shifted: PSI above and p below the thresholds."""
    out = []
    for dimension in sorted(set(baseline) & set(now)):
        index = psi(baseline[dimension], now[dimension])
        p = homogeneity_p(baseline[dimension], now[dimension])
        if index > psi_threshold and p < p_threshold:
            out.append(Shift(dimension, index, p))
    return out


def baseline_of(
    chain_records: list[Mapping[str, Any]], current_run: str, pinned: int | None = None
) -> Mapping[str, Any] | None:
    """The pinned run if it succeeded, else (nothing pinned) the chain's first run that passed;
    never the run being judged."""
    def run_of(r: Mapping[str, Any]) -> Mapping[str, Any]:
        return r["spec"].get("run") or {}

    candidates = [
        r
        for r in chain_records
        if r["spec"].get("event", "RunFinished") == "RunFinished"
        and run_of(r).get("name") != current_run
        and (
            run_of(r).get("number") == pinned and run_of(r).get("phase") == "Succeeded"
            if pinned
            else run_of(r).get("verdict") == "Passed"
        )
    ]
    return min(candidates, key=lambda r: r["spec"]["chain"]["sequence"], default=None)


def assess(
    chain_records: list[Mapping[str, Any]],
    run: RunRecord,
    cohort: Mapping[str, Mapping[str, int]] | None,
    settings: DriftSettings | None = None,
) -> Drift | None:
    """This run against the chain's baseline, as kept in its AuditRecord; None without a baseline
    or when this run produced no metrics (a failed run is reported as failed, not as drift)."""
    settings = settings or DriftSettings()
    base = baseline_of(chain_records, run.name, settings.baseline_run)
    if base is None or run.phase != "Succeeded" or not run.metrics:
        return None
    spec = base["spec"]
    base_metrics = {k: MetricValue.model_validate(v) for k, v in ((spec.get("run") or {}).get("metrics") or {}).items()}
    base_cohort = (spec.get("dataset") or {}).get("cohort") or {}
    found = degradations(base_metrics, run.metrics, settings.tolerance)
    shifts = input_shifts(base_cohort, cohort or {}, settings.psi_threshold, settings.p_value)
    return Drift(
        baseline_run=int(spec["run"]["number"]),
        baseline_sequence=int(spec["chain"]["sequence"]),
        compared=sorted(set(base_metrics) & set(run.metrics))[:64],
        degraded=[
            DegradedMetric(
                metric=d.metric, baseline=d.baseline, now=d.now, lower=d.lower, upper=d.upper, tolerance=d.tolerance
            )
            for d in found
        ],
        input_shift=[CohortShift(dimension=s.dimension, psi=s.psi, p_value=s.p_value) for s in shifts],
    )


def conditions(drift: Drift | None) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of the Degraded and InputShift conditions after a run."""
    if drift is None:
        return []
    degraded = (
        (
            "Degraded",
            "True",
            "MetricBelowBaseline",
            "; ".join(
                f"{d.metric} {d.now:.3f} [{d.lower:.3f}, {d.upper:.3f}] vs baseline {d.baseline:.3f} (run "
                f"{drift.baseline_run}), tolerance {d.tolerance:g}"
                for d in drift.degraded
            ),
        )
        if drift.degraded
        else (
            "Degraded",
            "False",
            "WithinBaseline",
            f"no metric worse than baseline run {drift.baseline_run} beyond the tolerance",
        )
    )
    shifted = (
        (
            "InputShift",
            "True",
            "CohortShifted",
            "; ".join(
                f"{s.dimension}: PSI {s.psi:.3f}, chi-square p {s.p_value:.2g} vs baseline run {drift.baseline_run}"
                for s in drift.input_shift
            ),
        )
        if drift.input_shift
        else ("InputShift", "False", "CohortStable", f"the input mix matches baseline run {drift.baseline_run}")
    )
    return [degraded, shifted]
