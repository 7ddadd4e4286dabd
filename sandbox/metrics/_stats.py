"""Small statistical helpers shared by the metric modules (numpy and the standard library only)."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray


def z_value(confidence_level: float) -> float:
    """Two-sided standard-normal critical value, e.g. 1.96 for 0.95."""
    return NormalDist().inv_cdf(0.5 + confidence_level / 2)


def wilson_interval(successes: int, trials: int, confidence_level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; stays inside [0, 1] and behaves at 0 and n."""
    if trials <= 0:
        return (float("nan"), float("nan"))
    z = z_value(confidence_level)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def percentile_interval(samples: ArrayLike, confidence_level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(samples, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    alpha = 1 - confidence_level
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def midranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks with ties given their average rank, in O(n log n)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    n = values.size
    # Start index of each run of equal values, then the average of the run's ranks.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], n]
    run_rank = (starts + ends + 1) / 2.0
    ranks_sorted = np.repeat(run_rank, ends - starts)
    out = np.empty(n, dtype=float)
    out[order] = ranks_sorted
    return out


def resample_weights(
    rng: np.random.Generator, clusters: NDArray[np.intp], n_clusters: int, batch: int
) -> NDArray[np.float64]:
    """Bootstrap multiplicities for one stratum: draw ``n_clusters`` clusters with replacement per
    resample and give every member the count of its cluster. Returns (batch, n_members)."""
    draws = rng.integers(0, n_clusters, size=(batch, n_clusters))
    offsets = (np.arange(batch) * n_clusters)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=batch * n_clusters).reshape(batch, n_clusters)
    return counts[:, clusters].astype(float)


def bootstrap_means(
    values: ArrayLike, *, resamples: int, seed: int, clusters: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Bootstrap distribution of a mean of per-case values (NaN cases ignored), resampling
    cases or, with ``clusters``, whole clusters."""
    v = np.asarray(values, dtype=float).ravel()
    keep = np.isfinite(v)
    v = v[keep]
    if v.size == 0:
        return np.full(resamples, np.nan)
    if clusters is None:
        cluster_index = np.arange(v.size)
    else:
        _, cluster_index = np.unique(np.asarray(clusters).ravel()[keep], return_inverse=True)
    n_clusters = int(cluster_index.max()) + 1
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    batch = int(max(1, min(512, 4_000_000 // max(v.size, 1))))
    for start in range(0, resamples, batch):
        b = min(batch, resamples - start)
        w = resample_weights(rng, cluster_index, n_clusters, b)
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + b] = np.where(total > 0, w @ v / total, np.nan)
    return out
