"""Small statistical helpers shared by the metric modules (numpy and the standard library only):
input checks, critical values, Wilson and percentile intervals, and the rule for when an
interval cannot be estimated at all (see docs/statistics.md)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Fewest cases (per class for AUC; clusters instead of cases when resampling clusters) from
#: which an interval is reported. Below it the simulated coverage of a nominal 95% interval
#: falls under 0.90 in plausible settings (bench/small_samples.py; docs/statistics.md).
MIN_CASES = 15

#: Why no interval is reported. noCases: nothing to estimate from (no trials, no finite value,
#: a class absent); tooFewCases: fewer than MIN_CASES; noVariation: the data show no spread the
#: method could estimate one from (DeLong variance 0, a bootstrap distribution of zero width).
Unavailable = Literal["noCases", "tooFewCases", "noVariation"]


@dataclass(frozen=True)
class Interval:
    """Bounds of a confidence interval; NaN bounds and ``unavailable`` set when none could be
    estimated. Unpacks as ``lower, upper``."""

    lower: float
    upper: float
    unavailable: Unavailable | None = None

    def __iter__(self) -> Iterator[float]:
        return iter((self.lower, self.upper))


NO_INTERVAL_NAN = (float("nan"), float("nan"))


def no_interval(reason: Unavailable) -> Interval:
    return Interval(float("nan"), float("nan"), reason)


def size_reason(count: int) -> Unavailable | None:
    """The reason an interval from ``count`` independent units (cases, clusters) is withheld."""
    if count <= 0:
        return "noCases"
    return "tooFewCases" if count < MIN_CASES else None


# --- input checks ----------------------------------------------------------------------------
# The metric functions are called with arrays that came from a vendor's output; coercing a bad
# value (NaN ranked highest, -1 taken as positive) would turn garbage into a plausible number.


def check_level(confidence_level: float) -> float:
    """A confidence level strictly between 0 and 1."""
    if isinstance(confidence_level, (bool, np.bool_)) or not isinstance(
        confidence_level, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"confidence_level must be a number between 0 and 1, got {type(confidence_level).__name__}")
    level = float(confidence_level)
    if not (0.0 < level < 1.0):
        raise ValueError(f"confidence_level must lie strictly between 0 and 1, got {level!r}")
    return level


def _numeric(values: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got an array of {arr.dtype}")
    return arr.astype(float, copy=False).ravel()


def check_finite(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Finite real numbers, as a flat float array; NaN and infinities are refused."""
    arr = _numeric(values, name)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} must be finite numbers: {int(bad.sum())} of {arr.size} are NaN or infinite (first at index "
            f"{int(np.argmax(bad))})"
        )
    return arr


def check_probabilities(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Finite numbers in [0, 1]."""
    arr = check_finite(values, name)
    bad = (arr < 0) | (arr > 1)
    if bad.any():
        raise ValueError(
            f"{name} must be probabilities in [0, 1]: {int(bad.sum())} are outside (first at index "
            f"{int(np.argmax(bad))})"
        )
    return arr


def check_binary(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Labels or mask values: bool, or numbers that are exactly 0 or 1 (so -1, 0.3 or NaN are
    refused rather than read as positive). Keeps the shape."""
    arr = np.asarray(values)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be 0/1 or bool, got an array of {arr.dtype}")
    if arr.dtype.kind == "u":
        ok = arr.size == 0 or int(arr.max()) <= 1
    elif arr.dtype.kind == "i":
        ok = arr.size == 0 or (int(arr.min()) >= 0 and int(arr.max()) <= 1)
    else:
        ok = bool(((arr == 0) | (arr == 1)).all())
    if not ok:
        bad = ~((arr == 0) | (arr == 1))
        first = np.unravel_index(int(np.argmax(bad)), arr.shape) if arr.ndim else ()
        raise ValueError(
            f"{name} must hold only 0 and 1 (or bool): {int(bad.sum())} values are something else (NaN, negative, "
            f"fractional or > 1; first at index {tuple(int(i) for i in first)})"
        )
    return arr != 0


def cluster_index(clusters: ArrayLike, size: int) -> NDArray[np.intp]:
    """0-based cluster number per case, for cluster ids of any sortable kind (e.g. patient ids)."""
    arr = np.asarray(clusters).ravel()
    if arr.size != size:
        raise ValueError(f"clusters has {arr.size} entries for {size} cases; give one cluster id per case")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("clusters must not contain NaN or infinite ids")
    if arr.dtype.kind == "O" and any(
        v is None or (isinstance(v, float) and not math.isfinite(v)) for v in arr.tolist()
    ):
        raise ValueError("clusters must not contain missing (None or NaN) ids")
    _, index = np.unique(arr, return_inverse=True)
    return index.astype(np.intp).ravel()


def check_resamples(resamples: int) -> int:
    if isinstance(resamples, (bool, np.bool_)) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a whole number >= 1, got {resamples!r}")
    return int(resamples)


# --- intervals -------------------------------------------------------------------------------


def z_value(confidence_level: float) -> float:
    """Two-sided standard-normal critical value, e.g. 1.96 for 0.95."""
    return NormalDist().inv_cdf(0.5 + check_level(confidence_level) / 2)


def wilson_interval(successes: int, trials: int, confidence_level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; stays inside [0, 1] and behaves at 0 and n.
    NaN bounds for no trials (nothing to estimate from)."""
    for name, v in (("successes", successes), ("trials", trials)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {v!r}")
    if successes > trials:
        raise ValueError(f"successes ({successes}) exceed trials ({trials})")
    z = z_value(confidence_level)
    if trials == 0:
        return NO_INTERVAL_NAN
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, float(centre - half)), min(1.0, float(centre + half)))


def percentile_interval(samples: ArrayLike, confidence_level: float = 0.95) -> tuple[float, float]:
    """Percentile bounds of a bootstrap distribution (NaN resamples, e.g. ones lacking a class,
    left out); NaN bounds when no resample is finite. No judgement on whether they mean anything:
    that is ``bootstrap_interval``."""
    alpha = 1 - check_level(confidence_level)
    values = _numeric(samples, "bootstrap samples")
    values = values[np.isfinite(values)]
    if values.size == 0:
        return NO_INTERVAL_NAN
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def bootstrap_interval(
    samples: ArrayLike, confidence_level: float = 0.95, unavailable: Unavailable | None = None
) -> Interval:
    """Percentile interval, or none: when ``unavailable`` (the caller's sample-size rule) says
    so, when no resample is finite, or when the interval has zero width (every resample the
    same, up to rounding: the data show no spread, which is not certainty)."""
    lo, hi = percentile_interval(samples, confidence_level)
    if unavailable is not None:
        return no_interval(unavailable)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return no_interval("noCases")
    if math.isclose(lo, hi, rel_tol=1e-9, abs_tol=1e-12):  # equal up to rounding in the resampled means
        return no_interval("noVariation")
    return Interval(lo, hi)


def midranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks with ties given their average rank, in O(n log n). NaN has no rank: refused."""
    values = check_finite(values, "values to rank")
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
    clusters = np.asarray(clusters)
    if clusters.dtype.kind not in "iu" or (clusters.size and (clusters.min() < 0 or clusters.max() >= n_clusters)):
        raise ValueError(f"clusters must be cluster numbers in [0, {n_clusters})")
    if n_clusters < 1 or batch < 1:
        raise ValueError("n_clusters and batch must be >= 1")
    draws = rng.integers(0, n_clusters, size=(batch, n_clusters))
    offsets = (np.arange(batch) * n_clusters)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=batch * n_clusters).reshape(batch, n_clusters)
    return counts[:, clusters].astype(float)


def _per_case_values(values: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per-case metric values: NaN marks a case whose value is undefined (e.g. HD95 with one
    mask empty) and is left out; an infinity is no metric value and is refused."""
    v = _numeric(values, "values")
    if np.isinf(v).any():
        raise ValueError("values must be finite numbers or NaN (undefined for that case); infinities are refused")
    return v, ~np.isnan(v)


def bootstrap_means(
    values: ArrayLike, *, resamples: int, seed: int, clusters: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Bootstrap distribution of a mean of per-case values (NaN cases ignored), resampling
    cases or, with ``clusters``, whole clusters."""
    resamples = check_resamples(resamples)
    v, keep = _per_case_values(values)
    index = None if clusters is None else cluster_index(clusters, v.size)
    v = v[keep]
    if v.size == 0:
        return np.full(resamples, np.nan)
    if index is None:
        index = np.arange(v.size)
    else:
        _, index = np.unique(index[keep], return_inverse=True)
    n_clusters = int(index.max()) + 1
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    batch = int(max(1, min(512, 4_000_000 // max(v.size, 1))))
    for start in range(0, resamples, batch):
        b = min(batch, resamples - start)
        w = resample_weights(rng, index.astype(np.intp), n_clusters, b)
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + b] = np.where(total > 0, w @ v / total, np.nan)
    return out


def mean_interval_unavailable(values: ArrayLike, clusters: ArrayLike | None = None) -> Unavailable | None:
    """Sample-size rule for the bootstrap of a mean: at least MIN_CASES cases with a defined
    value, or that many clusters holding one when whole clusters are resampled."""
    v, keep = _per_case_values(values)
    if clusters is None:
        return size_reason(int(keep.sum()))
    return size_reason(int(np.unique(cluster_index(clusters, v.size)[keep]).size))


def bootstrap_mean_interval(
    values: ArrayLike, *, resamples: int, seed: int, clusters: ArrayLike | None = None, confidence_level: float = 0.95
) -> Interval:
    """Percentile bootstrap interval of the mean of per-case values, or the reason there is none."""
    reason = mean_interval_unavailable(values, clusters)
    if reason is not None:
        check_level(confidence_level)
        return no_interval(reason)
    boot = bootstrap_means(values, resamples=resamples, seed=seed, clusters=clusters)
    return bootstrap_interval(boot, confidence_level)
