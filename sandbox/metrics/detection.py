"""Lesion detection: free-response ROC (sensitivity at fixed false positives per image).

A finding hits a lesion when its location lies within the lesion's radius (same slice
index, in-plane pixel distance). Findings are matched greedily by descending score, each
lesion at most once; later findings on an already-hit lesion count as neither TP nor FP
(as in the LUNA16 evaluation), all other findings are false positives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Lesion:
    x: float
    y: float
    slice: int
    radius: float


@dataclass(frozen=True)
class Finding:
    x: float
    y: float
    slice: int
    score: float


@dataclass(frozen=True)
class MatchedFindings:
    """Per finding: score, and whether it was a true positive (else a false positive)."""

    scores: NDArray[np.float64]
    true_positive: NDArray[np.bool_]
    lesions: int
    images: int


def match_case(findings: Sequence[Finding], lesions: Sequence[Lesion]) -> tuple[list[float], list[bool]]:
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


def sensitivity_at(matched: MatchedFindings, fp_per_image: Sequence[float]) -> NDArray[np.float64]:
    """Highest sensitivity reached with at most each given number of false positives per image."""
    fp, sens = froc(matched)
    out = np.empty(len(fp_per_image))
    for i, target in enumerate(fp_per_image):
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
    weights = np.atleast_2d(case_weights)
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
    out = np.empty((weights.shape[0], len(fp_per_image)))
    for j, target in enumerate(fp_per_image):
        out[:, j] = np.max(np.where(fppi <= target + 1e-12, sens, 0.0), axis=1)
    out[lesions[:, 0] == 0] = np.nan
    return out
