"""Intervals are reported only where they can be estimated, with the reason otherwise, and a
criterion on a missing bound is Inconclusive. Every interval the scorer reports follows the
configured confidence level (expected values from scipy and from known quantiles)."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from lightbox.api.results import MetricValue, ScoreReport
from lightbox.api.run import ScorerConfig
from lightbox.api.validation import AcceptanceCriterion
from lightbox.operator.verdict import evaluate
from lightbox.sandbox import scorer
from lightbox.sandbox.metrics import classification as cls
from lightbox.sandbox.metrics import detection as det
from lightbox.sandbox.metrics._stats import (
    MIN_CASES,
    Unavailable,
    bootstrap_interval,
    bootstrap_mean_interval,
    bootstrap_means,
    resample_weights,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "statistics.md"


def test_minimum_is_the_documented_one() -> None:
    assert MIN_CASES == 15
    assert "**15**" in DOCS.read_text()


def test_the_api_names_the_same_reasons_as_the_metrics() -> None:
    field = MetricValue.model_fields["interval_unavailable"].annotation
    literal = next(a for a in typing.get_args(field) if a is not type(None))
    assert (
        set(typing.get_args(literal)) == set(typing.get_args(Unavailable)) == {"noCases", "tooFewCases", "noVariation"}
    )


# --- the degenerate study of the issue: one positive, one negative ------------------------------


def test_one_case_per_class_has_an_auc_but_no_interval() -> None:
    y, s = [1, 0], [0.9, 0.1]
    area, iv = cls.delong_interval(y, s, 0.95)
    assert area == roc_auc_score(y, s) == 1.0
    assert iv.unavailable == "tooFewCases" and math.isnan(iv.lower) and math.isnan(iv.upper)
    boot = cls.auc_bootstrap_interval(y, s, resamples=200)
    assert boot.unavailable == "tooFewCases" and math.isnan(boot.lower)
    assert cls.auc_bootstrap_interval(y, s, resamples=200, clusters=["p1", "p2"]).unavailable == "tooFewCases"


def _overlapping(m: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(m, bool), np.zeros(n, bool)]
    return y, np.r_[rng.normal(1, 1, m), rng.normal(0, 1, n)]


@pytest.mark.parametrize(
    ("m", "n", "available"), [(MIN_CASES, MIN_CASES, True), (MIN_CASES - 1, 200, False), (200, MIN_CASES - 1, False)]
)
def test_auc_interval_needs_the_minimum_in_each_class(m: int, n: int, available: bool) -> None:
    y, s = _overlapping(m, n)
    _, iv = cls.delong_interval(y, s)
    boot = cls.auc_bootstrap_interval(y, s, resamples=300)
    for interval in (iv, boot):
        assert (interval.unavailable is None) == available
        assert math.isfinite(interval.lower) == available
    if not available:
        assert iv.unavailable == boot.unavailable == "tooFewCases"


def test_clustered_auc_interval_counts_patients_not_cases() -> None:
    # Enough positive cases, but from too few patients: the clusters are the independent units.
    y, s = _overlapping(3 * MIN_CASES, 3 * MIN_CASES)
    clusters = np.r_[np.arange(3 * MIN_CASES) % (MIN_CASES - 1), 1000 + np.arange(3 * MIN_CASES)]
    _, iv = cls.delong_interval(y, s, clusters=clusters)
    assert iv.unavailable == "tooFewCases"
    assert cls.auc_bootstrap_interval(y, s, resamples=200, clusters=clusters).unavailable == "tooFewCases"
    clusters[: 3 * MIN_CASES] = np.arange(3 * MIN_CASES) % MIN_CASES
    _, iv = cls.delong_interval(y, s, clusters=clusters)
    assert iv.unavailable is None and iv.lower < iv.upper


def test_perfect_separation_has_no_variance_to_estimate_an_interval_from() -> None:
    y = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    s = np.r_[np.linspace(0.6, 1.0, 30), np.linspace(0.0, 0.4, 30)]
    area, iv = cls.delong_interval(y, s)
    assert area == 1.0 and iv.unavailable == "noVariation"  # was [1.0, 1.0]
    assert cls.auc_bootstrap_interval(y, s, resamples=200).unavailable == "noVariation"


def test_wilson_needs_one_trial() -> None:
    y = np.array([1, 1, 0, 0, 0])
    m = cls.threshold_metrics(y, np.array([0.2, 0.3, 0.1, 0.2, 0.3]), 0.5)  # nothing called positive
    assert m.ppv.trials == 0 and m.ppv.unavailable == "noCases" and math.isnan(m.ppv.lower)
    assert m.sensitivity.unavailable is None and m.sensitivity.lower == 0.0 and m.sensitivity.upper > 0.5


def test_bootstrap_of_a_mean_needs_the_minimum_of_defined_values() -> None:
    rng = np.random.default_rng(4)
    values = rng.random(MIN_CASES)
    assert bootstrap_mean_interval(values, resamples=300, seed=0).unavailable is None
    undefined = values.copy()
    undefined[0] = np.nan  # e.g. an HD95 with one mask empty: not a case to count
    assert bootstrap_mean_interval(undefined, resamples=300, seed=0).unavailable == "tooFewCases"
    assert bootstrap_mean_interval([np.nan, np.nan], resamples=300, seed=0).unavailable == "noCases"
    assert bootstrap_mean_interval(np.full(40, 0.9), resamples=300, seed=0).unavailable == "noVariation"
    in_pairs = np.repeat(np.arange(MIN_CASES), 2)[: 2 * MIN_CASES - 2]  # MIN_CASES - 1 patients
    assert (
        bootstrap_mean_interval(rng.random(in_pairs.size), resamples=300, seed=0, clusters=in_pairs).unavailable
        == "tooFewCases"
    )
    with pytest.raises(ValueError, match="infinities are refused"):
        bootstrap_means([0.1, np.inf], resamples=10, seed=0)


def test_froc_interval_needs_the_minimum_of_cases_with_a_lesion() -> None:
    counts = np.r_[np.ones(MIN_CASES - 1), np.zeros(50)]
    assert det.froc_interval_unavailable(counts) == "tooFewCases"
    assert det.froc_interval_unavailable(np.r_[counts, 2.0]) is None
    assert (
        det.froc_interval_unavailable(np.r_[counts, 2.0], clusters=np.r_[np.zeros(MIN_CASES), np.arange(50)])
        == "tooFewCases"
    )
    assert det.froc_interval_unavailable(np.zeros(5)) == "noCases"
    assert bootstrap_interval(np.full(100, 0.7)).unavailable == "noVariation"
    assert bootstrap_interval(np.full(100, np.nan)).unavailable == "noCases"


# --- through the scorer and the verdict ----------------------------------------------------------


def _cfg(task: str = "classification", level: float = 0.95, **extra: object) -> ScorerConfig:
    return ScorerConfig.model_validate(
        {"task": task, "confidenceLevel": level, "bootstrap": {"resamples": 400, "seed": 3, "level": "case"}, **extra}
    )


def _criteria(metric: str, threshold: float) -> list[AcceptanceCriterion]:
    return [AcceptanceCriterion.model_validate({"metric": metric, "bound": b, "threshold": threshold, "comparison": c})
            for b, c in (("lower", ">="), ("upper", "<="))]


def test_degenerate_study_reports_why_and_a_criterion_on_the_bound_is_inconclusive() -> None:
    y, s = np.array([True, False]), np.array([0.9, 0.1])
    metrics = scorer.classification_metrics(_cfg(), y, s, None, ["auc", "sensitivity", "ppv"], {})
    auc = metrics["auc"]
    assert (auc.value, auc.lower, auc.upper, auc.method, auc.interval_unavailable) == (
        1.0,
        None,
        None,
        None,
        "tooFewCases",
    )
    assert metrics["aucBootstrap"].interval_unavailable == "tooFewCases" and metrics["aucBootstrap"].lower is None
    assert metrics["sensitivity"].interval_unavailable is None and metrics["sensitivity"].method == "wilson"
    report = ScoreReport(task="classification", cases=2, scored=2, metrics=scorer._round_metrics(metrics))
    assert (
        ScoreReport.model_validate_json(report.to_termination_message()).metrics["auc"].interval_unavailable
        == "tooFewCases"
    )
    results, verdict = evaluate(_criteria("auc", 0.5)[:1], report)
    # With the old [1.0, 1.0] this passed: the lower bound 1.0 >= 0.5.
    assert [r.outcome for r in results] == ["Inconclusive"] and verdict == "Inconclusive"


def test_segmentation_with_few_cases_gives_no_interval_and_an_inconclusive_bound() -> None:
    values = {
        "dice": np.array([0.8, 0.9, 0.85]),
        "iou": np.array([0.7, 0.8, 0.75]),
        "hd95": np.array([2.0, np.nan, 3.0]),
    }
    metrics = scorer.segmentation_metrics(_cfg("segmentation"), values, None, ["dice", "hd95"], {})
    assert metrics["dice"].interval_unavailable == metrics["hd95"].interval_unavailable == "tooFewCases"
    report = ScoreReport(task="segmentation", cases=3, scored=3, metrics=metrics)
    results, verdict = evaluate(_criteria("dice", 0.5) + _criteria("hd95", 5.0)[1:], report)
    assert [r.outcome for r in results] == [
        "Inconclusive",
        "Inconclusive",
        "Inconclusive",
    ] and verdict == "Inconclusive"


# --- the configured level reaches every interval the scorer reports -------------------------------


def _tails(level: float) -> list[float]:
    return {0.90: [0.05, 0.95], 0.99: [0.005, 0.995]}[level]


@pytest.mark.parametrize("level", [0.90, 0.99])
def test_scorer_classification_intervals_follow_the_level(level: float) -> None:
    rng = np.random.default_rng(9)
    y = rng.random(160) < 0.45
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    cfg = _cfg(level=level)
    metrics = scorer.classification_metrics(
        cfg, y, s, None, ["auc", "sensitivity", "specificity", "ppv", "npv", "brier"], {}
    )
    z = norm.ppf((1 + level) / 2)
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    var = psi.mean(axis=1).var(ddof=1) / len(pos) + psi.mean(axis=0).var(ddof=1) / len(neg)
    auc = roc_auc_score(y, s)
    assert (metrics["auc"].lower, metrics["auc"].upper) == pytest.approx(
        (auc - z * math.sqrt(var), auc + z * math.sqrt(var)), abs=1e-12
    )
    called = s >= cfg.operating_threshold
    for name, k, n in (
        ("sensitivity", (called & y).sum(), y.sum()), ("specificity", (~called & ~y).sum(), (~y).sum()),
        ("ppv", (called & y).sum(), called.sum()), ("npv", (~called & ~y).sum(), (~called).sum()),
    ):
        ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
        assert (metrics[name].lower, metrics[name].upper) == pytest.approx((ci.low, ci.high), abs=1e-12), name
    boot = cls.bootstrap_auc(y, s, resamples=400, seed=3)
    assert (metrics["aucBootstrap"].lower, metrics["aucBootstrap"].upper) == tuple(np.quantile(boot, _tails(level)))
    brier = bootstrap_means((s - y) ** 2, resamples=400, seed=3)
    assert (metrics["brier"].lower, metrics["brier"].upper) == tuple(np.quantile(brier, _tails(level)))


@pytest.mark.parametrize("level", [0.90, 0.99])
def test_scorer_segmentation_intervals_follow_the_level(level: float) -> None:
    rng = np.random.default_rng(2)
    values = {"dice": rng.beta(8, 2, 60), "iou": rng.beta(6, 3, 60), "hd95": rng.lognormal(1, 0.5, 60)}
    metrics = scorer.segmentation_metrics(_cfg("segmentation", level), values, None, ["dice", "iou", "hd95"], {})
    for name, v in values.items():
        boot = bootstrap_means(v, resamples=400, seed=3)
        assert (metrics[name].lower, metrics[name].upper) == tuple(np.quantile(boot, _tails(level))), name


@pytest.mark.parametrize("level", [0.90, 0.99])
def test_scorer_froc_interval_follows_the_level(level: float) -> None:
    rng = np.random.default_rng(5)
    findings: dict[str, list[det.Finding]] = {}
    lesions: dict[str, list[det.Lesion]] = {}
    for i in range(40):
        lesions[f"c{i}"] = [
            det.Lesion(float(rng.uniform(0, 50)), float(rng.uniform(0, 50)), 0, 4.0)
            for _ in range(int(rng.integers(0, 3)))
        ]
        findings[f"c{i}"] = [
            det.Finding(les.x + 1, les.y, 0, float(rng.random())) for les in lesions[f"c{i}"] if rng.random() < 0.7
        ]
        findings[f"c{i}"] += [
            det.Finding(float(rng.uniform(0, 50)), float(rng.uniform(0, 50)), 0, float(rng.random())) for _ in range(2)
        ]
    cfg = _cfg("detection", level, frocFalsePositives=[0.5, 1, 2])
    metrics = scorer.detection_metrics(cfg, findings, lesions, None, ["frocSensitivity"], None)
    # The scorer's resampling replayed with the public pieces; the level's tails come from here.
    cf = det.match_by_case(findings, lesions)
    rng2 = np.random.default_rng(3)
    boot = np.vstack([
        det.weighted_sensitivity_at(cf, resample_weights(rng2, np.arange(40), 40, min(256, 400 - start)), [0.5, 1, 2])
        for start in range(0, 400, 256)
    ])
    mean = boot[np.isfinite(boot).all(axis=1)].mean(axis=1)
    assert (metrics["frocSensitivity"].lower, metrics["frocSensitivity"].upper) == pytest.approx(
        tuple(np.quantile(mean, _tails(level))), abs=1e-12
    )
