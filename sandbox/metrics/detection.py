"""Lesion detection: free-response ROC (sensitivity at fixed false positives per image).

A finding hits a lesion when its location lies within the lesion's radius (same slice
index, in-plane pixel distance). Findings are matched greedily by descending score, each
lesion at most once; later findings on an already-hit lesion count as neither TP nor FP
(as in the LUNA16 evaluation), all other findings are false positives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightbox.sandbox.metrics._stats import Unavailable, check_finite, cluster_index, size_reason


def _finite(value: object, name: str) -> None:
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _slice_number(value: object) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"slice must be a whole number, got {value!r}")


@dataclass(frozen=True)
class Lesion:
    x: float
    y: float
    slice: int
    radius: float

    def __post_init__(self) -> None:
        _finite(self.x, "lesion x")
        _finite(self.y, "lesion y")
        _slice_number(self.slice)
        _finite(self.radius, "lesion radius")
        if self.radius < 0:
            raise ValueError(f"lesion radius must be >= 0, got {self.radius!r}")


@dataclass(frozen=True)
class Finding:
    x: float
    y: float
    slice: int
    score: float

    def __post_init__(self) -> None:
        # A NaN score would sort anywhere and a NaN location hit nothing: refuse both.
        _finite(self.x, "finding x")
        _finite(self.y, "finding y")
        _slice_number(self.slice)
        _finite(self.score, "finding score")


@dataclass(frozen=True)
class MatchedFindings:
    """Per finding: score, and whether it was a true positive (else a false positive)."""

    scores: NDArray[np.float64]
    true_positive: NDArray[np.bool_]
    lesions: int
    images: int

    def __post_init__(self) -> None:
        check_finite(self.scores, "scores")
        if np.asarray(self.true_positive).dtype != np.bool_ or np.shape(self.true_positive) != np.shape(self.scores):
            raise ValueError("true_positive must be a bool array with one entry per score")
        for name in ("lesions", "images"):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {v!r}")


def match_case(findings: Sequence[Finding], lesions: Sequence[Lesion]) -> tuple[list[float], list[bool]]:
    if not all(isinstance(f, Finding) for f in findings) or not all(isinstance(les, Lesion) for les in lesions):
        raise ValueError("match_case takes Finding and Lesion objects")
    hit = [False] * len(lesions)
    scores: list[float] = []
    tps: list[bool] = []
    for f in sorted(findings, key=lambda f: -f.score):
        best, best_d = -1, np.inf
        for i, les in enumerate(lesions):
            if les.slice != f.slice:
                continue
            d = float(np.hypot(f.x - les.x, f.y - les.y))
            if d <= les.radius and d < best_d:
                best, best_d = i, d
        if best < 0:
            scores.append(f.score)
            tps.append(False)
        elif not hit[best]:
            hit[best] = True
            scores.append(f.score)
            tps.append(True)
        # a second finding on an already-hit lesion is ignored
    return scores, tps


def match(findings: Mapping[str, Sequence[Finding]], lesions: Mapping[str, Sequence[Lesion]]) -> MatchedFindings:
    """Match every case in ``lesions`` (the scored images); findings of other cases are ignored."""
    all_scores: list[float] = []
    all_tp: list[bool] = []
    for case, case_lesions in lesions.items():
        s, t = match_case(findings.get(case, ()), case_lesions)
        all_scores += s
        all_tp += t
    return MatchedFindings(
        np.asarray(all_scores, dtype=float),
        np.asarray(all_tp, dtype=bool),
        sum(len(v) for v in lesions.values()),
        len(lesions),
    )


def froc(matched: MatchedFindings) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(false positives per image, sensitivity) at every distinct score threshold, ascending in FP."""
    if matched.images == 0:
        return np.zeros(1), np.full(1, np.nan)
    order = np.argsort(-matched.scores, kind="mergesort")
    s, tp = matched.scores[order], matched.true_positive[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1] if s.size else np.empty(0, int)
    tps = np.cumsum(tp)[last] if s.size else np.empty(0)
    fps = (last + 1) - tps
    sens = np.r_[0.0, tps / matched.lesions] if matched.lesions else np.full(last.size + 1, np.nan)
    return np.r_[0.0, fps / matched.images], sens


def _targets(fp_per_image: Sequence[float]) -> NDArray[np.float64]:
    t = check_finite(fp_per_image, "fp_per_image")
    if (t < 0).any():
        raise ValueError("fp_per_image must be >= 0 false positives per image")
    return t


def sensitivity_at(matched: MatchedFindings, fp_per_image: Sequence[float]) -> NDArray[np.float64]:
    """Highest sensitivity reached with at most each given number of false positives per image."""
    targets = _targets(fp_per_image)
    fp, sens = froc(matched)
    out = np.empty(len(targets))
    for i, target in enumerate(targets):
        ok = fp <= target + 1e-12
        out[i] = np.max(sens[ok]) if ok.any() else 0.0
    return out


@dataclass(frozen=True)
class CaseFindings:
    """Matched findings of every case, flattened, for resampling cases."""

    case_of_finding: NDArray[np.intp]
    scores: NDArray[np.float64]
    true_positive: NDArray[np.bool_]
    lesions_per_case: NDArray[np.float64]

    def __post_init__(self) -> None:
        check_finite(self.scores, "scores")
        n = np.shape(self.scores)
        if np.shape(self.case_of_finding) != n or np.shape(self.true_positive) != n:
            raise ValueError("case_of_finding, scores and true_positive must have one entry per finding")
        counts = check_finite(self.lesions_per_case, "lesions_per_case")
        if (counts < 0).any():
            raise ValueError("lesions_per_case must be >= 0")
        cases = np.asarray(self.case_of_finding)
        if cases.size and (cases.dtype.kind not in "iu" or cases.min() < 0 or cases.max() >= counts.size):
            raise ValueError("case_of_finding must be case numbers below the number of cases")


def match_by_case(findings: Mapping[str, Sequence[Finding]], lesions: Mapping[str, Sequence[Lesion]]) -> CaseFindings:
    case_idx: list[int] = []
    scores: list[float] = []
    tps: list[bool] = []
    counts: list[int] = []
    for i, (case, case_lesions) in enumerate(lesions.items()):
        s, t = match_case(findings.get(case, ()), case_lesions)
        case_idx += [i] * len(s)
        scores += s
        tps += t
        counts.append(len(case_lesions))
    return CaseFindings(
        np.asarray(case_idx, dtype=np.intp), np.asarray(scores, float), np.asarray(tps, bool), np.asarray(counts, float)
    )


def weighted_sensitivity_at(
    cf: CaseFindings, case_weights: NDArray[np.float64], fp_per_image: Sequence[float]
) -> NDArray[np.float64]:
    """Sensitivity at each FP rate for each row of (batch, cases) case multiplicities."""
    targets = _targets(fp_per_image)
    weights = np.atleast_2d(case_weights)
    if weights.ndim != 2 or weights.shape[1] != cf.lesions_per_case.size:
        raise ValueError(f"case_weights must be (batch, {cf.lesions_per_case.size}) case multiplicities")
    if (check_finite(weights, "case_weights") < 0).any():
        raise ValueError("case_weights must be >= 0")
    order = np.argsort(-cf.scores, kind="mergesort")
    s = cf.scores[order]
    w = weights[:, cf.case_of_finding[order]]
    tp = np.cumsum(w * cf.true_positive[order], axis=1)
    fp = np.cumsum(w * ~cf.true_positive[order], axis=1)
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1] if s.size else np.empty(0, np.intp)
    tp, fp = tp[:, last], fp[:, last]
    images = weights.sum(axis=1)[:, None]
    lesions = (weights @ cf.lesions_per_case)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.concatenate([np.zeros((weights.shape[0], 1)), tp / lesions], axis=1)
        fppi = np.concatenate([np.zeros((weights.shape[0], 1)), fp / images], axis=1)
    out = np.empty((weights.shape[0], len(targets)))
    for j, target in enumerate(targets):
        out[:, j] = np.max(np.where(fppi <= target + 1e-12, sens, 0.0), axis=1)
    out[lesions[:, 0] == 0] = np.nan
    return out


def froc_interval_unavailable(lesions_per_case: ArrayLike, clusters: ArrayLike | None = None) -> Unavailable | None:
    """Sample-size rule for a bootstrap interval of FROC sensitivity: at least MIN_CASES cases
    holding a lesion, or that many clusters holding one when whole clusters are resampled."""
    counts = check_finite(lesions_per_case, "lesions_per_case")
    with_lesion = counts > 0
    if clusters is None:
        return size_reason(int(with_lesion.sum()))
    return size_reason(int(np.unique(cluster_index(clusters, counts.size)[with_lesion]).size))
