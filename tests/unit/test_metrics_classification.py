"""Classification metrics against independent references: scikit-learn, direct counts,
brute-force DeLong, and the Wilson interval's defining equation solved numerically."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binomtest, norm
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score, roc_curve

from lightbox.sandbox.metrics import classification as cls
from lightbox.sandbox.metrics._stats import midranks, percentile_interval, wilson_interval, z_value


def _data(seed: int, n: int = 60, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    y[:2] = [True, False]
    s = rng.normal(y * 1.0, 1.0)
    if ties:
        s = np.round(s, 1)
    return y, s


def mann_whitney_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def brute_force_delong(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """DeLong, DeLong & Clarke-Pearson (1988) from the pairwise kernel, O(m n)."""
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    area = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(area), float(np.var(v10, ddof=1) / len(pos) + np.var(v01, ddof=1) / len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_sklearn_and_pairwise_count(seed: int) -> None:
    y, s = _data(seed, ties=seed % 2 == 0)
    assert cls.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert cls.auc(y, s) == pytest.approx(mann_whitney_auc(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_fast_delong_matches_brute_force(seed: int) -> None:
    y, s = _data(seed, n=40 + seed * 7, ties=seed % 2 == 1)
    area, var = cls.delong(y, s)
    ref_area, ref_var = brute_force_delong(y, s)
    assert area == pytest.approx(ref_area, abs=1e-12)
    assert var == pytest.approx(ref_var, rel=1e-10)


def brute_force_obuchowski(y: np.ndarray, s: np.ndarray, clusters: np.ndarray) -> float:
    """Obuchowski (1997) written out from the kernel, cluster by cluster, O(m n)."""
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    m, n, area = len(pos), len(neg), psi.mean()
    ids = sorted(set(clusters.tolist()))
    cp, cn = clusters[y], clusters[~y]
    v10 = {i: psi[cp == i].sum() / n for i in ids}  # sum over the cluster's positives of their placements
    v01 = {i: psi[:, cn == i].sum() / m for i in ids}
    m_i = {i: int((cp == i).sum()) for i in ids}
    n_i = {i: int((cn == i).sum()) for i in ids}
    i10, i01, k = sum(m_i[i] > 0 for i in ids), sum(n_i[i] > 0 for i in ids), len(ids)
    s10 = i10 / ((i10 - 1) * m) * sum((v10[i] - m_i[i] * area) ** 2 for i in ids)
    s01 = i01 / ((i01 - 1) * n) * sum((v01[i] - n_i[i] * area) ** 2 for i in ids)
    s11 = k / (k - 1) * sum((v10[i] - m_i[i] * area) * (v01[i] - n_i[i] * area) for i in ids)
    return float(s10 / m + s01 / n + 2 * s11 / (m * n))


@pytest.mark.parametrize("seed", range(4))
def test_clustered_variance_matches_the_formula_written_out(seed: int) -> None:
    y, s = _data(seed, n=60, ties=seed % 2 == 1)
    clusters = np.random.default_rng(seed).integers(0, 15, size=y.size)  # patients with 1-8 cases of either class
    area, var = cls.delong(y, s, clusters)
    assert area == pytest.approx(cls.auc(y, s), abs=1e-12)
    assert var == pytest.approx(brute_force_obuchowski(y, s, clusters), rel=1e-10)


def test_one_case_per_cluster_is_delong() -> None:
    y, s = _data(5, n=80, ties=True)
    assert cls.delong(y, s, [f"p{i}" for i in range(y.size)])[1] == pytest.approx(cls.delong(y, s)[1], rel=1e-12)


LEVELS = [0.90, 0.95, 0.99]


def test_critical_values_are_the_published_ones() -> None:
    # Standard normal table: 1.6449 (90%), 1.9600 (95%), 2.5758 (99%).
    assert z_value(0.90) == pytest.approx(1.6448536269514722, abs=1e-12)
    assert z_value(0.95) == pytest.approx(1.959963984540054, abs=1e-12)
    assert z_value(0.99) == pytest.approx(2.5758293035489004, abs=1e-12)


@pytest.mark.parametrize("level", LEVELS)
def test_delong_interval_is_normal_around_auc_at_each_level(level: float) -> None:
    y, s = _data(3, n=200)
    area, iv = cls.delong_interval(y, s, level)
    _, var = brute_force_delong(y, s)
    z = norm.ppf((1 + level) / 2)
    assert iv.unavailable is None
    assert iv.lower == pytest.approx(max(0, area - z * math.sqrt(var)), abs=1e-12)
    assert iv.upper == pytest.approx(min(1, area + z * math.sqrt(var)), abs=1e-12)


@pytest.mark.parametrize("level", LEVELS)
def test_obuchowski_interval_at_each_level(level: float) -> None:
    y, s = _data(1, n=120, ties=True)
    clusters = np.random.default_rng(1).integers(0, 50, size=y.size)
    area, iv = cls.delong_interval(y, s, level, clusters=clusters)
    half = norm.ppf((1 + level) / 2) * math.sqrt(brute_force_obuchowski(y, s, clusters))
    assert (iv.lower, iv.upper) == pytest.approx((max(0, area - half), min(1, area + half)), abs=1e-12)


@pytest.mark.parametrize("level", LEVELS)
def test_auc_bootstrap_interval_takes_the_level_s_percentiles(level: float) -> None:
    y, s = _data(6, n=120)
    boot = cls.bootstrap_auc(y, s, resamples=400, seed=2)
    iv = cls.auc_bootstrap_interval(y, s, resamples=400, seed=2, confidence_level=level)
    tail = {0.90: 0.05, 0.95: 0.025, 0.99: 0.005}[level]
    assert (iv.lower, iv.upper) == tuple(np.quantile(boot, [tail, 1 - tail]))


def test_percentile_interval_on_a_known_distribution() -> None:
    values = np.arange(1001.0)  # the q-quantile of 0..1000 (linear) is 1000 q
    assert percentile_interval(values, 0.90) == pytest.approx((50.0, 950.0))
    assert percentile_interval(values, 0.95) == pytest.approx((25.0, 975.0))
    assert percentile_interval(values, 0.99) == pytest.approx((5.0, 995.0))


def test_midranks_match_scipy() -> None:
    from scipy.stats import rankdata

    x = np.round(np.random.default_rng(1).normal(size=500), 1)
    np.testing.assert_allclose(midranks(x), rankdata(x))


def test_count_based_bootstrap_equals_sklearn_on_the_same_resamples() -> None:
    y, s = _data(7, n=80)
    idx = np.random.default_rng(0).integers(0, len(y), size=(25, len(y)))
    ours = cls.bootstrap_auc_from_indices(y, s, idx)
    ref = [roc_auc_score(y[i], s[i]) if y[i].any() and (~y[i]).any() else np.nan for i in idx]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_stratified_bootstrap_reproduces_its_draws() -> None:
    """Replay the generator: each resample must be the AUC of the drawn cases."""
    y, s = _data(11, n=70)
    boot = cls.bootstrap_auc(y, s, resamples=30, seed=5)
    rng = np.random.default_rng(5)
    pos, neg = s[y], np.sort(s[~y])
    b = min(30, cls.stratified_batch(len(pos), len(neg)))
    assert b == 30  # one batch: draws are all negatives' then all positives'
    ni = rng.integers(0, len(neg), size=(b, len(neg)), dtype=np.int32)
    pi = rng.integers(0, len(pos), size=(b, len(pos)), dtype=np.int32)
    for r in range(b):
        yy = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
        assert boot[r] == pytest.approx(roc_auc_score(yy, np.r_[pos[pi[r]], neg[ni[r]]]), abs=1e-12)


def test_patient_level_bootstrap_keeps_patients_together() -> None:
    y, s = _data(2, n=60)
    clusters = np.arange(60) // 3
    boot = cls.bootstrap_auc(y, s, resamples=200, seed=1, clusters=clusters)
    assert np.isfinite(boot).sum() > 150
    assert abs(np.nanmean(boot) - cls.auc(y, s)) < 0.05
    # With one case per cluster the cluster path is an (unstratified) case bootstrap.
    single = cls.bootstrap_auc(y, s, resamples=200, seed=1, clusters=np.arange(60))
    assert abs(np.nanstd(single) - np.nanstd(cls.bootstrap_auc(y, s, resamples=200, seed=2))) < 0.02


def test_bootstrap_is_deterministic_in_seed() -> None:
    y, s = _data(4)
    np.testing.assert_array_equal(
        cls.bootstrap_auc(y, s, resamples=50, seed=9), cls.bootstrap_auc(y, s, resamples=50, seed=9)
    )


@pytest.mark.parametrize("seed", range(4))
def test_roc_curve_matches_sklearn(seed: int) -> None:
    y, s = _data(seed)
    fpr, tpr, thr = cls.roc_curve(y, s)
    rf, rt, rthr = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, rf)
    np.testing.assert_allclose(tpr, rt)
    np.testing.assert_allclose(thr[1:], rthr[1:])


@pytest.mark.parametrize("seed", range(4))
def test_youden_threshold_matches_sklearn_roc(seed: int) -> None:
    y, s = _data(seed)
    rf, rt, rthr = roc_curve(y, s, drop_intermediate=False)
    j = rt - rf
    assert cls.youden_threshold(y, s) == pytest.approx(rthr[int(np.argmax(j))])


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8])
def test_threshold_metrics_match_confusion_matrix(threshold: float) -> None:
    rng = np.random.default_rng(3)
    y = rng.random(150) < 0.35
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    tn, fp, fn, tp = confusion_matrix(y, p >= threshold, labels=[False, True]).ravel()
    m = cls.threshold_metrics(y, p, threshold)
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
    assert m.sensitivity.value == pytest.approx(tp / (tp + fn))
    assert m.specificity.value == pytest.approx(tn / (tn + fp))
    if tp + fp:
        assert m.ppv.value == pytest.approx(tp / (tp + fp))
    assert m.npv.value == pytest.approx(tn / (tn + fn)) if tn + fn else math.isnan(m.npv.value)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (47, 120), (1, 1)])
def test_wilson_interval_solves_the_score_equation(k: int, n: int, level: float) -> None:
    z = norm.ppf((1 + level) / 2)
    phat = k / n
    f = lambda p: abs(phat - p) - z * math.sqrt(p * (1 - p) / n)  # noqa: E731
    lo, hi = wilson_interval(k, n, level)
    eps = 1e-12
    ref_lo = 0.0 if k == 0 else brentq(f, eps, phat if k < n else 1 - eps)
    ref_hi = 1.0 if k == n else brentq(f, phat if k > 0 else eps, 1 - eps)
    assert lo == pytest.approx(ref_lo, abs=1e-9)
    assert hi == pytest.approx(ref_hi, abs=1e-9)
    # and scipy's own Wilson interval
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_interval_literal_values() -> None:
    # 3 of 10 by the published formula (Wilson 1927), z from the normal table, worked by hand:
    # centre = (0.3 + z^2/20) / (1 + z^2/10), half = z sqrt(0.021 + z^2/400) / (1 + z^2/10);
    # at 95% this is the familiar 0.1078-0.6032.
    assert wilson_interval(3, 10, 0.90) == pytest.approx((0.1269, 0.5583), abs=1e-4)
    assert wilson_interval(3, 10, 0.95) == pytest.approx((0.1078, 0.6032), abs=1e-4)
    assert wilson_interval(3, 10, 0.99) == pytest.approx((0.0796, 0.6800), abs=1e-4)


@pytest.mark.parametrize("level", LEVELS)
def test_threshold_metrics_carry_the_level(level: float) -> None:
    rng = np.random.default_rng(8)
    y = rng.random(90) < 0.4
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    m = cls.threshold_metrics(y, p, 0.5, level)
    for prop in (m.sensitivity, m.specificity, m.ppv, m.npv):
        ci = binomtest(prop.successes, prop.trials).proportion_ci(confidence_level=level, method="wilson")
        assert (prop.lower, prop.upper) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_brier_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    p = rng.random(300)
    assert cls.brier(y, p) == pytest.approx(brier_score_loss(y, p))


def test_ece_matches_a_direct_loop_and_sklearn_bins() -> None:
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(1)
    p = rng.random(1000)
    y = rng.random(1000) < p**1.5
    cal = cls.calibration(y, p, n_bins=10)
    ece = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        inside = (p >= lo) & ((p < hi) if b < 9 else (p <= hi))
        if inside.any():
            ece += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    assert cal.ece == pytest.approx(ece, abs=1e-12)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose([b.observed_rate for b in cal.bins], prob_true)
    np.testing.assert_allclose([b.mean_predicted for b in cal.bins], prob_pred)


def test_degenerate_inputs_give_nan_not_errors() -> None:
    assert math.isnan(cls.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert all(math.isnan(v) for v in cls.delong([0, 0], [0.1, 0.2]))
    assert np.isnan(cls.bootstrap_auc([1, 1], [0.1, 0.2], resamples=5)).all()


# --- invalid inputs are refused, not coerced ---------------------------------------------------


def _valid() -> tuple[np.ndarray, np.ndarray]:
    y = np.array([1, 0, 1, 0, 1, 0], float)
    return y, np.array([0.9, 0.1, 0.8, 0.3, 0.6, 0.4])


SCORE_FUNCTIONS = {
    "auc": lambda y, s: cls.auc(y, s),
    "delong": lambda y, s: cls.delong(y, s),
    "delong_interval": lambda y, s: cls.delong_interval(y, s, 0.95),
    "bootstrap_auc": lambda y, s: cls.bootstrap_auc(y, s, resamples=5),
    "auc_bootstrap_interval": lambda y, s: cls.auc_bootstrap_interval(y, s, resamples=5),
    "bootstrap_auc_from_indices": lambda y, s: cls.bootstrap_auc_from_indices(y, s, np.zeros((1, len(y)), int)),
    "roc_curve": lambda y, s: cls.roc_curve(y, s),
    "youden_threshold": lambda y, s: cls.youden_threshold(y, s),
    "threshold_metrics": lambda y, s: cls.threshold_metrics(y, s, 0.5),
    "brier": lambda y, s: cls.brier(y, s),
    "calibration": lambda y, s: cls.calibration(y, s),
}


@pytest.mark.parametrize("name", sorted(SCORE_FUNCTIONS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused_as_scikit_learn_does(name: str, bad: float) -> None:
    y, s = _valid()
    s[2] = bad
    with pytest.raises(ValueError):
        roc_auc_score(y, s)  # the reference refuses them too
    with pytest.raises(ValueError, match=r"(y_score|y_prob) must be finite numbers: 1 of 6 .*index 2"):
        SCORE_FUNCTIONS[name](y, s)


@pytest.mark.parametrize("name", sorted(SCORE_FUNCTIONS))
@pytest.mark.parametrize("bad", [-1, 0.3, np.nan, 2])
def test_labels_other_than_0_and_1_are_refused(name: str, bad: float) -> None:
    y, s = _valid()
    y[3] = bad  # was taken as a positive
    with pytest.raises(ValueError, match=r"y_true must hold only 0 and 1 .*index \(3,\)"):
        SCORE_FUNCTIONS[name](y, s)


@pytest.mark.parametrize("name", sorted(SCORE_FUNCTIONS))
def test_non_numeric_labels_and_scores_are_refused(name: str) -> None:
    y, s = _valid()
    with pytest.raises(ValueError, match="y_true must be 0/1 or bool"):
        SCORE_FUNCTIONS[name](np.array(["1", "0", "1", "0", "1", "0"]), s)
    with pytest.raises(ValueError, match="must be numeric"):
        SCORE_FUNCTIONS[name](y, np.array(["0.9"] * 6))
    with pytest.raises(ValueError, match="differ in length"):
        SCORE_FUNCTIONS[name](y, s[:-1])


def test_valid_label_encodings_agree() -> None:
    y, s = _valid()
    expected = roc_auc_score(y, s)
    for labels in (y.astype(bool), y.astype(int), y.astype(np.uint8), y.astype(np.float32)):
        assert cls.auc(labels, s) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_probabilities_outside_0_1_are_refused_as_scikit_learn_does(bad: float) -> None:
    y, p = _valid()
    p[0] = bad
    with pytest.raises(ValueError):
        brier_score_loss(y, p)
    with pytest.raises(ValueError, match=r"y_prob must be probabilities in \[0, 1\]"):
        cls.brier(y, p)
    with pytest.raises(ValueError, match=r"y_prob must be probabilities in \[0, 1\]"):
        cls.calibration(y, p)
    assert cls.auc(y, p) == pytest.approx(roc_auc_score(y, p))  # ranks need no probabilities


def test_other_arguments_are_checked() -> None:
    y, s = _valid()
    with pytest.raises(ValueError, match="threshold must be a number"):
        cls.threshold_metrics(y, s, float("nan"))
    for level in (0, 1, 1.5, -0.1, float("nan"), True, "0.95"):
        with pytest.raises(ValueError, match="confidence_level"):
            cls.delong_interval(y, s, level)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="confidence_level"):
            cls.threshold_metrics(y, s, 0.5, level)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="confidence_level"):
            wilson_interval(1, 2, level)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="confidence_level"):
            percentile_interval([0.1, 0.2], level)  # type: ignore[arg-type]
    for resamples in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="resamples"):
            cls.bootstrap_auc(y, s, resamples=resamples)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clusters has 5 entries for 6 cases"):
        cls.bootstrap_auc(y, s, resamples=5, clusters=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="clusters has 5 entries for 6 cases"):
        cls.delong(y, s, clusters=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="clusters must not contain"):
        cls.delong(y, s, clusters=[1.0, 2.0, np.nan, 3.0, 4.0, 5.0])
    with pytest.raises(ValueError, match="indices must be case numbers"):
        cls.bootstrap_auc_from_indices(y, s, np.array([[0, 1, 2, 3, 4, 6]]))
    with pytest.raises(ValueError, match="n_bins"):
        cls.calibration(y, s, n_bins=0)
    for k, n in ((-1, 5), (6, 5), (1.5, 3), (True, 3)):
        with pytest.raises(ValueError):
            wilson_interval(k, n)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="values to rank must be finite"):
        midranks(np.array([0.2, np.nan, 0.1]))
