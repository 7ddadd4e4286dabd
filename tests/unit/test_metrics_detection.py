"""FROC against a brute-force threshold sweep."""

from __future__ import annotations

import numpy as np
import pytest

from lightbox.sandbox.metrics import detection as det


def _case(rng: np.random.Generator) -> tuple[list[det.Finding], list[det.Lesion]]:
    lesions = [
        det.Lesion(float(rng.uniform(0, 100)), float(rng.uniform(0, 100)), 0, float(rng.uniform(3, 8)))
        for _ in range(rng.integers(0, 3))
    ]
    findings = []
    for les in lesions:
        if rng.random() < 0.7:
            findings.append(
                det.Finding(les.x + rng.normal(0, 2), les.y + rng.normal(0, 2), 0, float(np.round(rng.random(), 1)))
            )
    for _ in range(rng.integers(0, 4)):
        findings.append(
            det.Finding(float(rng.uniform(0, 100)), float(rng.uniform(0, 100)), 0, float(np.round(rng.random(), 1)))
        )
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
    scores, tps = det.match_case(
        [det.Finding(10, 10, 0, 0.9), det.Finding(11, 10, 0, 0.8), det.Finding(50, 50, 0, 0.7)], [lesion]
    )
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


# --- invalid inputs are refused, not coerced ---------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_findings_and_lesions_must_be_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="finding score must be a finite number"):
        det.Finding(1.0, 1.0, 0, bad)  # a NaN score sorted anywhere
    with pytest.raises(ValueError, match="finding x must be a finite number"):
        det.Finding(bad, 1.0, 0, 0.5)  # a NaN location was a silent false positive
    with pytest.raises(ValueError, match="finding y must be a finite number"):
        det.Finding(1.0, bad, 0, 0.5)
    with pytest.raises(ValueError, match="lesion x must be a finite number"):
        det.Lesion(bad, 1.0, 0, 2.0)
    with pytest.raises(ValueError, match="lesion radius must be a finite number"):
        det.Lesion(1.0, 1.0, 0, bad)


def test_other_finding_and_lesion_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="lesion radius must be >= 0"):
        det.Lesion(1.0, 1.0, 0, -2.0)
    for bad_slice in (1.5, True, "0", None):
        with pytest.raises(ValueError, match="slice must be a whole number"):
            det.Finding(1.0, 1.0, bad_slice, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finding score must be a finite number"):
        det.Finding(1.0, 1.0, 0, "0.9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Finding and Lesion objects"):
        det.match_case([{"x": 1, "y": 1, "slice": 0, "score": 0.5}], [])  # type: ignore[list-item]
    assert det.Finding(np.float32(1.0), 2, np.int64(0), np.float64(0.5)).slice == 0  # numpy numbers are fine


def test_froc_arguments_are_checked() -> None:
    findings = {"c0": [det.Finding(10, 10, 0, 0.9)], "c1": []}
    lesions = {"c0": [det.Lesion(10, 10, 0, 5)], "c1": [det.Lesion(3, 3, 0, 2)]}
    matched = det.match(findings, lesions)
    for bad in ([float("nan")], [-1.0], [float("inf")]):
        with pytest.raises(ValueError, match="fp_per_image"):
            det.sensitivity_at(matched, bad)
    cf = det.match_by_case(findings, lesions)
    with pytest.raises(ValueError, match=r"case_weights must be \(batch, 2\)"):
        det.weighted_sensitivity_at(cf, np.ones((1, 3)), [1.0])
    for bad_w in (np.array([[1.0, -1.0]]), np.array([[1.0, np.nan]])):
        with pytest.raises(ValueError, match="case_weights"):
            det.weighted_sensitivity_at(cf, bad_w, [1.0])
    with pytest.raises(ValueError, match="scores must be finite"):
        det.MatchedFindings(np.array([np.nan]), np.array([True]), 1, 1)
    with pytest.raises(ValueError, match="one entry per score"):
        det.MatchedFindings(np.array([0.5, 0.4]), np.array([True]), 1, 1)
    with pytest.raises(ValueError, match="images must be a whole number"):
        det.MatchedFindings(np.array([0.5]), np.array([True]), 1, -1)
    with pytest.raises(ValueError, match="case_of_finding must be case numbers"):
        det.CaseFindings(np.array([5]), np.array([0.5]), np.array([True]), np.array([1.0]))
