"""Verdicts, from the semantics in verdict.py's docstring and the README, written out by hand.

Every comparison operator meets the threshold below, exactly on and above each of the point
estimate and both interval ends, so swapping one operator for another, or a strict one for
a non-strict one, changes at least one row. The numbers are binary fractions (0.25, 0.375,
...) so "exactly on the threshold" is exact in floating point too.
"""

import pytest

from lightbox.api import ScoreReport
from lightbox.api.validation import AcceptanceCriterion
from lightbox.operator.verdict import evaluate, summarize

LOWER, VALUE, UPPER = 0.25, 0.5, 0.75


def report(value=0.9, lower=0.85, upper=0.95, cases=100, scored=100, task="classification", name="auc"):
    return ScoreReport(
        task=task,
        cases=cases,
        scored=scored,
        metrics={name: {"value": value, "lower": lower, "upper": upper, "method": "delong"}},
    )


def crit(**kw):
    return AcceptanceCriterion.model_validate({"metric": "auc", "threshold": 0.8, **kw})


def judge(comparison, bound, threshold, lower=LOWER, upper=UPPER):
    results, verdict = evaluate(
        [crit(comparison=comparison, bound=bound, threshold=threshold)], report(VALUE, lower, upper)
    )
    assert len(results) == 1
    assert verdict == results[0].outcome
    return results[0]


# Point estimate 0.5 with interval [0.25, 0.75]: Passed when both ends hold, Failed when
# neither does, Inconclusive when the interval straddles the threshold.
POINT_WITH_INTERVAL = [
    (">=", 0.125, "Passed"),
    (">=", 0.25, "Passed"),  # lower end exactly on: >= holds there
    (">=", 0.375, "Inconclusive"),
    (">=", 0.5, "Inconclusive"),
    (">=", 0.75, "Inconclusive"),  # upper end exactly on: holds, lower does not
    (">=", 0.875, "Failed"),
    (">", 0.125, "Passed"),
    (">", 0.25, "Inconclusive"),  # lower end exactly on: > does not hold there
    (">", 0.5, "Inconclusive"),
    (">", 0.75, "Failed"),  # upper end exactly on: not above
    (">", 0.875, "Failed"),
    ("<=", 0.125, "Failed"),
    ("<=", 0.25, "Inconclusive"),  # lower end exactly on: holds, upper does not
    ("<=", 0.5, "Inconclusive"),
    ("<=", 0.75, "Passed"),  # upper end exactly on
    ("<=", 0.875, "Passed"),
    ("<", 0.125, "Failed"),
    ("<", 0.25, "Failed"),  # lower end exactly on: not below
    ("<", 0.5, "Inconclusive"),
    ("<", 0.75, "Inconclusive"),  # upper end exactly on: < does not hold there
    ("<", 0.875, "Passed"),
]


@pytest.mark.parametrize(("comparison", "threshold", "outcome"), POINT_WITH_INTERVAL)
def test_point_criterion_with_an_interval(comparison, threshold, outcome):
    result = judge(comparison, "point", threshold)
    assert result.outcome == outcome
    assert result.observed == VALUE
    assert (result.comparison, result.threshold, result.bound, result.metric) == (comparison, threshold, "point", "auc")


# No interval (e.g. a metric reported without one): the point estimate alone decides.
POINT_WITHOUT_INTERVAL = [
    (">=", 0.375, "Passed"),
    (">=", 0.5, "Passed"),  # exactly on
    (">=", 0.625, "Failed"),
    (">", 0.375, "Passed"),
    (">", 0.5, "Failed"),  # exactly on
    (">", 0.625, "Failed"),
    ("<=", 0.375, "Failed"),
    ("<=", 0.5, "Passed"),  # exactly on
    ("<=", 0.625, "Passed"),
    ("<", 0.375, "Failed"),
    ("<", 0.5, "Failed"),  # exactly on
    ("<", 0.625, "Passed"),
]


@pytest.mark.parametrize(("comparison", "threshold", "outcome"), POINT_WITHOUT_INTERVAL)
def test_point_criterion_without_an_interval(comparison, threshold, outcome):
    result = judge(comparison, "point", threshold, lower=None, upper=None)
    assert (result.outcome, result.observed) == (outcome, VALUE)


@pytest.mark.parametrize(("lower", "upper"), [(None, UPPER), (LOWER, None)])
def test_half_an_interval_is_no_interval(lower, upper):
    # Only the point estimate can be judged; 0.5 >= 0.375 holds, 0.5 >= 0.625 does not.
    assert judge(">=", "point", 0.375, lower=lower, upper=upper).outcome == "Passed"
    assert judge(">=", "point", 0.625, lower=lower, upper=upper).outcome == "Failed"


# A criterion on a bound passes only when that bound clears the threshold; fails when even the
# point estimate (0.5) is on the wrong side; Inconclusive in between.
ON_A_BOUND = [
    ("lower", ">=", 0.125, "Passed"),
    ("lower", ">=", 0.25, "Passed"),  # bound exactly on
    ("lower", ">=", 0.375, "Inconclusive"),
    ("lower", ">=", 0.5, "Inconclusive"),  # point exactly on: it holds, the bound does not
    ("lower", ">=", 0.625, "Failed"),
    ("lower", ">", 0.125, "Passed"),
    ("lower", ">", 0.25, "Inconclusive"),  # bound exactly on: not above
    ("lower", ">", 0.5, "Failed"),  # point exactly on: not above
    ("lower", "<=", 0.125, "Failed"),
    ("lower", "<=", 0.25, "Passed"),  # bound exactly on
    ("lower", "<=", 0.375, "Passed"),
    ("lower", "<", 0.25, "Failed"),  # bound exactly on, point above
    ("lower", "<", 0.375, "Passed"),
    ("upper", "<=", 0.875, "Passed"),
    ("upper", "<=", 0.75, "Passed"),  # bound exactly on
    ("upper", "<=", 0.625, "Inconclusive"),
    ("upper", "<=", 0.5, "Inconclusive"),  # point exactly on: it holds, the bound does not
    ("upper", "<=", 0.375, "Failed"),
    ("upper", "<", 0.875, "Passed"),
    ("upper", "<", 0.75, "Inconclusive"),  # bound exactly on: not below
    ("upper", "<", 0.5, "Failed"),  # point exactly on: not below
    ("upper", ">=", 0.75, "Passed"),  # bound exactly on
    ("upper", ">=", 0.625, "Passed"),
    ("upper", ">=", 0.875, "Failed"),
    ("upper", ">", 0.75, "Failed"),  # bound exactly on, point below
    ("upper", ">", 0.625, "Passed"),
]


@pytest.mark.parametrize(("bound", "comparison", "threshold", "outcome"), ON_A_BOUND)
def test_criterion_on_a_bound(bound, comparison, threshold, outcome):
    result = judge(comparison, bound, threshold)
    assert result.outcome == outcome
    assert result.observed == {"lower": LOWER, "upper": UPPER}[bound]
    assert result.bound == bound


@pytest.mark.parametrize("bound", ["lower", "upper"])
@pytest.mark.parametrize("comparison", [">=", ">", "<=", "<"])
def test_a_bound_without_an_interval_is_inconclusive(bound, comparison):
    # 0.5 clears (or fails) these thresholds on its own; without the bound nothing is decided.
    for threshold in (0.125, 0.875):
        result = judge(comparison, bound, threshold, lower=None, upper=None)
        assert (result.outcome, result.observed) == ("Inconclusive", None)


def test_lower_distance_is_better():
    # The example: hd95 <= 5 mm must fail when the distance is worse (larger).
    def hd95(value):
        results, verdict = evaluate(
            [AcceptanceCriterion(metric="hd95", comparison="<=", threshold=5.0)],
            report(value, None, None, task="segmentation", name="hd95"),
        )
        return verdict

    assert (hd95(4.5), hd95(5.0), hd95(5.5)) == ("Passed", "Passed", "Failed")


def test_examples_from_the_readme_shape():
    # README: "Passed / Failed / Inconclusive when the interval straddles the threshold".
    rep = report(0.9, 0.85, 0.95)
    assert evaluate([crit(threshold=0.8)], rep)[1] == "Passed"
    assert evaluate([crit(threshold=0.97)], rep)[1] == "Failed"
    assert evaluate([crit(threshold=0.9)], rep)[1] == "Inconclusive"


@pytest.mark.parametrize(
    ("thresholds", "verdict"),
    [
        ((0.125, 0.25), "Passed"),
        ((0.125, 0.5), "Inconclusive"),  # Passed + Inconclusive
        ((0.5, 0.875), "Failed"),  # Inconclusive + Failed
        ((0.125, 0.875), "Failed"),  # Passed + Failed
        ((0.125, 0.5, 0.875), "Failed"),
    ],
)
def test_worst_outcome_wins(thresholds, verdict):
    results, overall = evaluate([crit(threshold=t) for t in thresholds], report(VALUE, LOWER, UPPER))
    assert len(results) == len(thresholds)
    assert overall == verdict


def test_missing_metric_is_never_a_pass():
    results, verdict = evaluate([crit(metric="sensitivity", threshold=0.5)], report())
    assert verdict == "Inconclusive"
    assert (results[0].metric, results[0].observed, results[0].outcome) == ("sensitivity", None, "Inconclusive")


def test_missing_metric_with_a_passing_one_is_still_inconclusive():
    _, verdict = evaluate([crit(threshold=0.5), crit(metric="dice", threshold=0.5)], report())
    assert verdict == "Inconclusive"


def test_unscored_cases_fail_the_run():
    results, verdict = evaluate([crit()], report(scored=90))
    assert verdict == "Failed"
    assert results[0].outcome == "Passed"  # the criterion itself held
    row = results[-1]
    assert (row.metric, row.bound, row.comparison, row.threshold) == ("completeness", "point", ">=", 1.0)
    assert (row.observed, row.outcome) == (0.9, "Failed")


def test_one_unscored_case_is_enough_to_fail():
    results, verdict = evaluate([crit()], report(cases=100, scored=99))
    assert verdict == "Failed" and len(results) == 2 and results[1].observed == 0.99


def test_every_case_scored_adds_no_completeness_row():
    results, verdict = evaluate([crit()], report(cases=100, scored=100))
    assert [r.metric for r in results] == ["auc"] and verdict == "Passed"


def test_unscored_cases_fail_even_without_criteria():
    results, verdict = evaluate([], report(scored=50))
    assert verdict == "Failed" and [r.metric for r in results] == ["completeness"]


def test_no_criteria_no_verdict():
    assert evaluate([], report()) == ([], None)


def test_summary_names_main_metric_and_interval():
    assert summarize(report()) == "auc 0.900 [0.850, 0.950]"
    assert summarize(report(0.8125, None, None)) == "auc 0.812"
    assert summarize(report(0.5, 0.25, None)) == "auc 0.500"
    assert summarize(report(0.5, None, 0.75)) == "auc 0.500"


@pytest.mark.parametrize(
    ("task", "name", "text"),
    [
        ("segmentation", "dice", "dice 0.500 [0.250, 0.750]"),
        ("detection", "frocSensitivity", "frocSensitivity 0.500 [0.250, 0.750]"),
    ],
)
def test_summary_main_metric_per_task(task, name, text):
    assert summarize(report(VALUE, LOWER, UPPER, task=task, name=name)) == text


def test_summary_without_the_main_metric_says_how_many_were_scored():
    assert summarize(report(task="segmentation", cases=20, scored=7)) == "dice n/a (7/20 scored)"


@pytest.mark.parametrize("reason", ["tooFewCases", "noCases"])
def test_too_few_cases_show_the_estimate_they_could_not_judge(reason):
    # CriterionResult.observed is "the value compared": the point estimate, even when too few
    # cases leave it Inconclusive (quality staff see what the two cases gave).
    rep = ScoreReport(
        task="classification", cases=2, scored=2, metrics={"auc": {"value": 0.625, "intervalUnavailable": reason}}
    )
    results, verdict = evaluate([crit(threshold=0.5)], rep)
    assert (results[0].observed, results[0].outcome, verdict) == (0.625, "Inconclusive", "Inconclusive")
