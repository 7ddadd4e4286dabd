"""Acceptance criteria → verdict, with honest handling of uncertainty.

A criterion on the point estimate is Inconclusive when the confidence interval
straddles the threshold: the data cannot tell, and so is one on a metric whose
interval the scorer withheld for too few cases. A criterion on a bound passes
only when that bound clears the threshold; it fails when even the point
estimate is on the wrong side, and is Inconclusive in between. A run that left
cases unscored cannot pass: an algorithm that skips hard cases must not look
better for it.
"""

from __future__ import annotations

import operator as op
from collections.abc import Callable

from lightbox.api.results import MetricValue, ScoreReport
from lightbox.api.validation import AcceptanceCriterion, CriterionResult, Verdict

_COMPARE: dict[str, Callable[[float, float], bool]] = {">=": op.ge, ">": op.gt, "<=": op.le, "<": op.lt}

#: Reasons for a missing interval under which even the point estimate cannot be judged. (noVariation keeps
#: the point: a perfect separation on enough cases is a real extreme, not a lack of data.)
_TOO_FEW = frozenset({"noCases", "tooFewCases"})

#: The metric shown in ``kubectl get validations`` for each task.
MAIN_METRIC = {"classification": "auc", "segmentation": "dice", "detection": "frocSensitivity"}


def _judge(criterion: AcceptanceCriterion, metric: MetricValue | None) -> CriterionResult:
    base = criterion.model_dump(include={"metric", "bound", "comparison", "threshold"})
    if metric is None:
        return CriterionResult(**base, observed=None, outcome="Inconclusive")
    holds = _COMPARE[criterion.comparison]
    threshold = criterion.threshold
    lower, upper = metric.lower, metric.upper
    observed: float | None
    if criterion.bound == "point":
        observed = metric.value
        if metric.interval_unavailable in _TOO_FEW:
            # Too few cases to say how uncertain the estimate is: one positive and one negative case
            # give AUC 1.0, which must not pass a criterion on its own.
            return CriterionResult(**base, observed=observed, outcome="Inconclusive")
        if lower is None or upper is None:
            outcome: Verdict = "Passed" if holds(observed, threshold) else "Failed"
        else:
            ends = (holds(lower, threshold), holds(upper, threshold))
            outcome = "Passed" if all(ends) else "Failed" if not any(ends) else "Inconclusive"
    else:
        observed = lower if criterion.bound == "lower" else upper
        if observed is None:
            return CriterionResult(**base, observed=None, outcome="Inconclusive")
        if holds(observed, threshold):
            outcome = "Passed"
        elif not holds(metric.value, threshold):
            outcome = "Failed"
        else:
            outcome = "Inconclusive"
    return CriterionResult(**base, observed=observed, outcome=outcome)


def evaluate(criteria: list[AcceptanceCriterion], report: ScoreReport) -> tuple[list[CriterionResult], Verdict | None]:
    """Outcome of every criterion and the overall verdict (None when no criteria are set)."""
    results = [_judge(c, report.metrics.get(c.metric)) for c in criteria]
    if report.cases and report.scored < report.cases:
        results.append(
            CriterionResult(
                metric="completeness",
                bound="point",
                comparison=">=",
                threshold=1.0,
                observed=report.scored / report.cases,
                outcome="Failed",
            )
        )
    if not results:
        return results, None
    outcomes = {r.outcome for r in results}
    verdict: Verdict = "Failed" if "Failed" in outcomes else "Inconclusive" if "Inconclusive" in outcomes else "Passed"
    return results, verdict


def summarize(report: ScoreReport) -> str:
    """The task's main metric with its interval, e.g. ``auc 0.912 [0.871, 0.944]``."""
    name = MAIN_METRIC[report.task]
    metric = report.metrics.get(name)
    if metric is None:
        return f"{name} n/a ({report.scored}/{report.cases} scored)"
    if metric.lower is None or metric.upper is None:
        return f"{name} {metric.value:.3f}"
    return f"{name} {metric.value:.3f} [{metric.lower:.3f}, {metric.upper:.3f}]"
