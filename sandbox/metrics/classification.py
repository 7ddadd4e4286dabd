"""Binary classification metrics: ROC AUC with DeLong and bootstrap intervals, threshold
metrics with Wilson intervals, calibration.

Everything here is O(n log n) in the number of cases (one sort), and the bootstrap never
re-sorts: a resample only changes how often each case counts, so its AUC follows from
per-distinct-score counts and one cumulative sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightbox.sandbox.metrics._stats import (
    Interval,
    Unavailable,
    bootstrap_interval,
    check_binary,
    check_finite,
    check_level,
    check_probabilities,
    check_resamples,
    cluster_index,
    midranks,
    no_interval,
    size_reason,
    wilson_interval,
    z_value,
)


def _as_binary(
    y_true: ArrayLike, y_score: ArrayLike, probabilities: bool = False
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Labels (0/1 or bool only) and scores (finite; in [0, 1] when they are probabilities)."""
    y = check_binary(y_true, "y_true").ravel()
    s = check_probabilities(y_score, "y_prob") if probabilities else check_finite(y_score, "y_score")
    if y.shape != s.shape:
        raise ValueError(f"y_true and the scores differ in length ({y.size} vs {s.size})")
    return y, s


def auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U / (m n)), ties counted one half."""
    y, s = _as_binary(y_true, y_score)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return float("nan")
    ranks = midranks(s)
    return float((ranks[y].sum() - m * (m + 1) / 2) / (m * n))


def delong(y_true: ArrayLike, y_score: ArrayLike, clusters: ArrayLike | None = None) -> tuple[float, float]:
    """AUC and its DeLong variance by the fast midrank algorithm of Sun & Xu (2014).

    With ``clusters`` (e.g. a patient id per case), cases of one cluster are not taken as
    independent: the variance is Obuchowski's (1997) clustered form, built from the same
    structural components summed per cluster. With one case per cluster it is DeLong's."""
    y, s = _as_binary(y_true, y_score)
    index = None if clusters is None else cluster_index(clusters, y.size)
    x_pos, x_neg = s[y], s[~y]
    m, n = x_pos.size, x_neg.size
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    tz = midranks(np.concatenate([x_pos, x_neg]))
    tx, ty = midranks(x_pos), midranks(x_neg)
    area = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n  # structural components of the positives
    v01 = 1.0 - (tz[m:] - ty) / m  # and of the negatives
    if index is not None:
        return float(area), _clustered_variance(area, v10, v01, index[y], index[~y], int(index.max()) + 1)
    s10 = v10.var(ddof=1) if m > 1 else 0.0
    s01 = v01.var(ddof=1) if n > 1 else 0.0
    return float(area), float(s10 / m + s01 / n)


def _clustered_variance(
    area: float,
    v10: NDArray[np.float64],
    v01: NDArray[np.float64],
    pos: NDArray[np.intp],
    neg: NDArray[np.intp],
    k: int,
) -> float:
    """Obuchowski, Biometrics 53:567 (1997), eqs. for V10, V01 and their covariance per cluster."""
    m, n = v10.size, v01.size
    m_i, n_i = np.bincount(pos, minlength=k), np.bincount(neg, minlength=k)
    d10 = np.bincount(pos, weights=v10, minlength=k) - m_i * area  # per-cluster sums, centred
    d01 = np.bincount(neg, weights=v01, minlength=k) - n_i * area
    k10, k01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    s10 = k10 / ((k10 - 1) * m) * float((d10**2).sum()) if k10 > 1 else 0.0
    s01 = k01 / ((k01 - 1) * n) * float((d01**2).sum()) if k01 > 1 else 0.0
    s11 = k / (k - 1) * float((d10 * d01).sum()) if k > 1 else 0.0
    return s10 / m + s01 / n + 2 * s11 / (m * n)


def auc_interval_unavailable(y_true: ArrayLike, clusters: ArrayLike | None = None) -> Unavailable | None:
    """Sample-size rule for an AUC interval: at least MIN_CASES positives and as many negatives,
    or, when cases are clustered, that many clusters holding a positive and holding a negative
    (a class of one case has no variance to estimate; a handful gives intervals far too narrow)."""
    y = check_binary(y_true, "y_true").ravel()
    if clusters is None:
        return size_reason(min(int(y.sum()), int((~y).sum())))
    index = cluster_index(clusters, y.size)
    return size_reason(min(np.unique(index[y]).size, np.unique(index[~y]).size))


def delong_interval(
    y_true: ArrayLike, y_score: ArrayLike, confidence_level: float = 0.95, clusters: ArrayLike | None = None
) -> tuple[float, Interval]:
    """AUC and its normal-theory interval from the DeLong (or, with ``clusters``, Obuchowski)
    variance, clipped to [0, 1]; no interval below the sample-size rule or with variance 0."""
    z = z_value(confidence_level)
    area, var = delong(y_true, y_score, clusters)
    reason = auc_interval_unavailable(y_true, clusters)
    if reason is not None:
        return area, no_interval(reason)
    if not var > 0:
        return area, no_interval("noVariation")
    half = z * math.sqrt(var)
    return area, Interval(max(0.0, area - half), min(1.0, area + half))


class _GroupedScores:
    """Cases grouped by distinct score, ascending, so weighted AUCs need no sorting."""

    def __init__(self, y: NDArray[np.bool_], s: NDArray[np.float64]) -> None:
        uniq, group = np.unique(s, return_inverse=True)
        self.n_groups = uniq.size
        self.group = group.astype(np.intp)
        self.y = y

    def auc_from_group_weights(self, wpos: NDArray[np.float64], wneg: NDArray[np.float64]) -> NDArray[np.float64]:
        """AUC per row of (batch, n_groups) positive/negative weights."""
        below = np.cumsum(wneg, axis=1) - wneg
        num = np.einsum("bg,bg->b", wpos, below + 0.5 * wneg)
        den = wpos.sum(axis=1) * wneg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)

    def group_weights(self, case_weights: NDArray[np.float64], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
        batch = case_weights.shape[0]
        g = self.group[mask]
        offsets = (np.arange(batch) * self.n_groups)[:, None]
        flat = np.bincount(
            (g[None, :] + offsets).ravel(), weights=case_weights[:, mask].ravel(), minlength=batch * self.n_groups
        )
        # With weights bincount gives float64 (numpy's stubs say intp).
        return cast(NDArray[np.float64], flat.reshape(batch, self.n_groups))

    def bincount_groups(self, groups: NDArray[np.intp]) -> NDArray[np.float64]:
        batch = groups.shape[0]
        offsets = (np.arange(batch) * self.n_groups)[:, None]
        flat = np.bincount((groups + offsets).ravel(), minlength=batch * self.n_groups)
        return flat.reshape(batch, self.n_groups).astype(float)


def _batch_size(n_cases: int) -> int:
    return int(max(1, min(512, 4_000_000 // max(n_cases, 1))))


def bootstrap_auc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    resamples: int = 2000,
    seed: int = 0,
    clusters: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Bootstrap distribution of the AUC.

    Without ``clusters`` the resampling is stratified: positives and negatives are each drawn
    with replacement to their own count, so every resample has both classes. With ``clusters``
    (e.g. a patient id per case) whole clusters are drawn, keeping correlated cases together;
    resamples that happen to lack a class are returned as NaN.
    """
    y, s = _as_binary(y_true, y_score)
    resamples = check_resamples(resamples)
    grouped = _GroupedScores(y, s)
    rng = np.random.default_rng(seed)
    out = np.empty(resamples, dtype=float)
    batch = _batch_size(y.size)
    if clusters is None:
        return _stratified_bootstrap_auc(s[y], s[~y], resamples, rng)
    index = cluster_index(clusters, y.size)
    n_clusters = int(index.max()) + 1 if index.size else 0
    if n_clusters == 0:
        return np.full(resamples, np.nan)
    for start in range(0, resamples, batch):
        b = min(batch, resamples - start)
        draws = rng.integers(0, n_clusters, size=(b, n_clusters))
        offsets = (np.arange(b) * n_clusters)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_clusters).reshape(b, n_clusters)
        case_w = counts[:, index].astype(float)
        out[start : start + b] = grouped.auc_from_group_weights(
            grouped.group_weights(case_w, y), grouped.group_weights(case_w, ~y)
        )
    return out


def _stratified_bootstrap_auc(
    x_pos: NDArray[np.float64], x_neg: NDArray[np.float64], resamples: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    # With the negatives sorted, 2 * (#below) + (#tied) for a positive score is C[lo] + C[hi],
    # C being the cumulative resample counts of the negatives: one bincount and one cumsum per
    # resample, no gather over the (usually larger) negative class.
    m, n = x_pos.size, x_neg.size
    if m == 0 or n == 0:
        return np.full(resamples, np.nan)
    neg_sorted = np.sort(x_neg)
    lo = np.searchsorted(neg_sorted, x_pos, side="left")
    hi = np.searchsorted(neg_sorted, x_pos, side="right")
    out = np.empty(resamples, dtype=float)
    batch = stratified_batch(m, n)
    for start in range(0, resamples, batch):
        b = min(batch, resamples - start)
        draws = rng.integers(0, n, size=(b, n), dtype=np.int32)
        draws += (np.arange(b, dtype=np.int32) * n)[:, None]
        cum = np.zeros((b, n + 1), dtype=np.int64)
        np.cumsum(np.bincount(draws.ravel(), minlength=b * n).reshape(b, n), axis=1, out=cum[:, 1:])
        per_positive = cum[:, lo] + cum[:, hi]
        picks = rng.integers(0, m, size=(b, m), dtype=np.int32)
        out[start : start + b] = np.take_along_axis(per_positive, picks, axis=1).sum(axis=1)
    return out / (2.0 * m * n)


def stratified_batch(m: int, n: int) -> int:
    """Resamples drawn per numpy call: many for small studies (less Python overhead), one for
    large ones (the arrays of a single resample already amortise it)."""
    return 1 if m + n >= 20_000 else int(max(1, min(1024, 200_000 // (m + n))))


def bootstrap_auc_from_indices(y_true: ArrayLike, y_score: ArrayLike, indices: NDArray[np.intp]) -> NDArray[np.float64]:
    """AUC of each row of explicit resample indices (for checking the count-based bootstrap)."""
    y, s = _as_binary(y_true, y_score)
    grouped = _GroupedScores(y, s)
    idx = np.atleast_2d(indices)
    if idx.dtype.kind not in "iu" or (idx.size and (idx.min() < 0 or idx.max() >= y.size)):
        raise ValueError(f"indices must be case numbers in [0, {y.size})")
    yy = y[idx]
    gg = grouped.group[idx]
    wpos = np.stack([np.bincount(g[t], minlength=grouped.n_groups) for g, t in zip(gg, yy, strict=True)]).astype(float)
    wneg = np.stack([np.bincount(g[~t], minlength=grouped.n_groups) for g, t in zip(gg, yy, strict=True)]).astype(float)
    return grouped.auc_from_group_weights(wpos, wneg)


def roc_curve(
    y_true: ArrayLike, y_score: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(fpr, tpr, thresholds), one point per distinct score plus the (0, 0) start.

    A case is called positive when its score is >= the threshold; the first threshold is +inf.
    """
    y, s = _as_binary(y_true, y_score)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_run].astype(float)
    fps = (last_of_run + 1) - tps
    m, n = y.sum(), (~y).sum()
    tpr = np.r_[0.0, tps / m] if m else np.full(tps.size + 1, np.nan)
    fpr = np.r_[0.0, fps / n] if n else np.full(fps.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s_sorted[last_of_run]]


def youden_threshold(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Score threshold maximising sensitivity + specificity - 1 (the highest such threshold on ties)."""
    fpr, tpr, thr = roc_curve(y_true, y_score)
    j = tpr - fpr
    if not np.isfinite(j).any():
        return float("nan")
    best = int(np.nanargmax(j[1:])) + 1  # skip the +inf starting point
    return float(thr[best])


@dataclass(frozen=True)
class Proportion:
    successes: int
    trials: int
    lower: float
    upper: float

    @property
    def value(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    @property
    def unavailable(self) -> Unavailable | None:
        """Why there is no interval. Wilson's needs one trial, no more: its coverage stays near
        nominal for small counts and its width shows how few they are (docs/statistics.md)."""
        return "noCases" if self.trials == 0 else None


def _proportion(successes: int, trials: int, confidence_level: float) -> Proportion:
    lo, hi = wilson_interval(successes, trials, confidence_level)
    return Proportion(int(successes), int(trials), lo, hi)


@dataclass(frozen=True)
class ThresholdMetrics:
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion


def threshold_metrics(
    y_true: ArrayLike, y_score: ArrayLike, threshold: float, confidence_level: float = 0.95
) -> ThresholdMetrics:
    y, s = _as_binary(y_true, y_score)
    if (
        isinstance(threshold, (bool, np.bool_))
        or not isinstance(threshold, (int, float, np.integer, np.floating))
        or math.isnan(threshold)
    ):
        raise ValueError(f"threshold must be a number (not NaN), got {threshold!r}")
    check_level(confidence_level)
    called = s >= threshold
    tp, fp = int((called & y).sum()), int((called & ~y).sum())
    fn, tn = int((~called & y).sum()), int((~called & ~y).sum())
    return ThresholdMetrics(
        threshold=threshold,
        tp=tp, fp=fp, tn=tn, fn=fn,
        sensitivity=_proportion(tp, tp + fn, confidence_level),
        specificity=_proportion(tn, tn + fp, confidence_level),
        ppv=_proportion(tp, tp + fp, confidence_level),
        npv=_proportion(tn, tn + fn, confidence_level),
    )


def brier(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    y, p = _as_binary(y_true, y_prob, probabilities=True)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


@dataclass(frozen=True)
class Calibration:
    ece: float
    bins: list[ReliabilityBin] = field(default_factory=list)


def calibration(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10) -> Calibration:
    """Expected calibration error over equal-width probability bins (the last bin includes 1.0)."""
    if isinstance(n_bins, (bool, np.bool_)) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a whole number >= 1, got {n_bins!r}")
    y, p = _as_binary(y_true, y_prob, probabilities=True)
    if y.size == 0:
        return Calibration(float("nan"))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    sum_p = np.bincount(which, weights=p, minlength=n_bins)
    sum_y = np.bincount(which, weights=y.astype(float), minlength=n_bins)
    bins: list[ReliabilityBin] = []
    ece = 0.0
    for b in range(n_bins):
        if counts[b] == 0:
            continue
        mean_p, rate = sum_p[b] / counts[b], sum_y[b] / counts[b]
        ece += counts[b] / y.size * abs(rate - mean_p)
        bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), int(counts[b]), float(mean_p), float(rate)))
    return Calibration(float(ece), bins)


def auc_bootstrap_interval(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    resamples: int = 2000,
    seed: int = 0,
    clusters: ArrayLike | None = None,
    confidence_level: float = 0.95,
) -> Interval:
    """Percentile interval of the bootstrap AUC, under the same sample-size rule as DeLong's."""
    boot = bootstrap_auc(y_true, y_score, resamples=resamples, seed=seed, clusters=clusters)
    return bootstrap_interval(boot, confidence_level, auc_interval_unavailable(y_true, clusters))
