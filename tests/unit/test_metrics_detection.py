"""FROC against a brute-force threshold sweep."""

from __future__ import annotations

import numpy as np
import pytest

from lightbox.sandbox.metrics import detection as det


def _case(rng: np.random.Generator) -> tuple[list[det.Finding], list[det.Lesion]]:
    lesions = [det.Lesion(float(rng.uniform(0, 100)), float(rng.uniform(0, 100)), 0, float(rng.uniform(3, 8))) for _ in range(rng.integers(0, 3))]
    findings = []
    for les in lesions:
        if rng.random() < 0.7:
            findings.append(det.Finding(les.x + rng.normal(0, 2), les.y + rng.normal(0, 2), 0, float(np.round(rng.random(), 1))))
    for _ in range(rng.integers(0, 4)):
        findings.append(det.Finding(float(rng.uniform(0, 100)), float(rng.uniform(0, 100)), 0, float(np.round(rng.random(), 1))))
    return findings, lesions


def brute_force(findings: dict, lesions: dict, targets: list[float]) -> list[float]:
    """Sweep every threshold; at each, re-match from scratch with only findings >= threshold."""
    thresholds = sorted({f.score for fs in findings.values() for f in fs}, reverse=True)
    total = sum(len(v) for v in lesions.values())
    points = [(0.0, 0.0)]
    for t in thresholds:
        tp = fp = 0
        for case, ls in lesions.items():
            kept = [f for f in findings.get(case, []) if f.score >= t]
            scores, tps = det.match_case(kept, ls)
            tp += sum(tps)
            fp += len(tps) - sum(tps)
        points.append((fp / len(lesions), tp / total))
    return [max(s for f, s in points if f <= target) for target in targets]


@pytest.mark.parametrize("seed", range(5))
def test_froc_matches_threshold_sweep(seed: int) -> None:
    rng = np.random.default_rng(seed)
    findings, lesions = {}, {}
    for i in range(25):
        findings[f"c{i}"], lesions[f"c{i}"] = _case(rng)
    targets = [0.125, 0.25, 0.5, 1, 2, 4, 8]
    got = det.sensitivity_at(det.match(findings, lesions), targets)
    np.testing.assert_allclose(got, brute_force(findings, lesions, targets))
    cf = det.match_by_case(findings, lesions)
    np.testing.assert_allclose(det.weighted_sensitivity_at(cf, np.ones((1, 25)), targets)[0], got)


def test_each_lesion_counts_once_and_duplicates_are_not_false_positives() -> None:
    lesion = det.Lesion(10, 10, 0, 5)
    scores, tps = det.match_case([det.Finding(10, 10, 0, 0.9), det.Finding(11, 10, 0, 0.8), det.Finding(50, 50, 0, 0.7)], [lesion])
    assert scores == [0.9, 0.7] and tps == [True, False]


def test_other_slice_is_a_miss() -> None:
    _, tps = det.match_case([det.Finding(10, 10, 1, 0.9)], [det.Lesion(10, 10, 0, 5)])
    assert tps == [False]


def test_case_weights_equal_duplicated_cases() -> None:
    rng = np.random.default_rng(3)
    findings, lesions = {}, {}
    for i in range(6):
        findings[f"c{i}"], lesions[f"c{i}"] = _case(rng)
    lesions["c0"] = lesions["c0"] or [det.Lesion(1, 1, 0, 1)]
    w = np.array([[2, 0, 1, 1, 3, 1]], float)
    dup_f, dup_l = {}, {}
    for i, k in enumerate(w[0].astype(int)):
        for j in range(k):
            dup_f[f"c{i}_{j}"], dup_l[f"c{i}_{j}"] = findings[f"c{i}"], lesions[f"c{i}"]
    targets = [0.5, 1, 2]
    np.testing.assert_allclose(
        det.weighted_sensitivity_at(det.match_by_case(findings, lesions), w, targets)[0],
        det.sensitivity_at(det.match(dup_f, dup_l), targets),
    )
