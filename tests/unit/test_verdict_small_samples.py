"""A point criterion on a metric whose interval was withheld for too few cases is Inconclusive.

Expected outcomes are written by hand from the rule in operator/verdict.py's docstring.
"""

from __future__ import annotations

import pytest

from lightbox.api.results import MetricValue, ScoreReport
from lightbox.api.validation import AcceptanceCriterion
from lightbox.operator.verdict import evaluate


def _report(metric: MetricValue) -> ScoreReport:
    return ScoreReport(task="classification", cases=2, scored=2, metrics={"auc": metric})


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("tooFewCases", "Inconclusive"), ("noCases", "Inconclusive"), ("noVariation", "Passed"), (None, "Passed")],
)
def test_point_criterion_without_interval(reason: str | None, expected: str) -> None:
    # AUC 1.0 from one positive and one negative case: nothing to judge it by.
    metric = MetricValue(value=1.0, interval_unavailable=reason)
    criterion = AcceptanceCriterion(metric="auc", bound="point", comparison=">=", threshold=0.8)
    results, verdict = evaluate([criterion], _report(metric))
    assert [r.outcome for r in results] == [expected]
    assert verdict == expected


def test_failing_point_is_still_inconclusive_with_too_few_cases() -> None:
    # Too few cases cut both ways: a low estimate from two cases does not fail the device either.
    metric = MetricValue(value=0.0, interval_unavailable="tooFewCases")
    criterion = AcceptanceCriterion(metric="auc", bound="point", comparison=">=", threshold=0.8)
    _, verdict = evaluate([criterion], _report(metric))
    assert verdict == "Inconclusive"
