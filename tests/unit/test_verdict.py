import pytest

from lightbox.api import ScoreReport
from lightbox.api.validation import AcceptanceCriterion
from lightbox.operator.verdict import evaluate, summarize


def report(value=0.9, lower=0.85, upper=0.95, cases=100, scored=100, **metrics):
    return ScoreReport(
        task="classification",
        cases=cases,
        scored=scored,
        metrics={"auc": {"value": value, "lower": lower, "upper": upper, "method": "delong"}, **metrics},
    )


def crit(**kw):
    return AcceptanceCriterion.model_validate({"metric": "auc", "threshold": 0.8, **kw})


@pytest.mark.parametrize(
    ("criterion", "rep", "outcome"),
    [
        (crit(), report(), "Passed"),  # whole interval above
        (crit(threshold=0.97), report(), "Failed"),  # whole interval below
        (crit(threshold=0.9), report(), "Inconclusive"),  # straddles
        (crit(threshold=0.9, bound="lower"), report(), "Inconclusive"),  # point clears, bound does not
        (crit(threshold=0.84, bound="lower"), report(), "Passed"),
        (crit(threshold=0.92, bound="lower"), report(), "Failed"),  # even the point is below
        (crit(threshold=0.96, comparison="<", bound="upper"), report(), "Passed"),
        (crit(threshold=0.9), report(lower=None, upper=None), "Passed"),
    ],
)
def test_outcomes(criterion, rep, outcome):
    results, verdict = evaluate([criterion], rep)
    assert results[0].outcome == outcome
    assert verdict == outcome


def test_worst_outcome_wins():
    _, verdict = evaluate([crit(), crit(threshold=0.9), crit(threshold=0.99)], report())
    assert verdict == "Failed"


def test_missing_metric_is_never_a_pass():
    results, verdict = evaluate([crit(metric="sensitivity", threshold=0.5)], report())
    assert verdict == "Inconclusive" and results[0].observed is None


def test_unscored_cases_fail_the_run():
    results, verdict = evaluate([crit()], report(scored=90))
    assert verdict == "Failed"
    assert results[-1].metric == "completeness" and results[-1].observed == pytest.approx(0.9)


def test_no_criteria_no_verdict():
    assert evaluate([], report()) == ([], None)


def test_summary_names_main_metric_and_interval():
    assert summarize(report()) == "auc 0.900 [0.850, 0.950]"
