"""Curves kept per run in their released form (sandbox/release.py, docs/covert-channel.md):
reliability bins, FROC points, the per-case Dice histogram; checked against numpy/sklearn and hand
counts, with a hostile vendor trying to put a value through them, and carried into the RunRecord."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import factories
import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from test_scorer import Run, _truth_and_scores

from lightbox.api.results import TERMINATION_MESSAGE_LIMIT, ScoreReport
from lightbox.api.validation import RunRecord
from lightbox.operator import outcome
from lightbox.operator.conclude import finish_record
from lightbox.sandbox import release

MIN_CELL = 10


def _banded(count: int) -> int:
    """Doubling bands from the minimum cell, by hand: 10, 20, 40, 80, ..."""
    return next(b for b in (10, 20, 40, 80, 160, 320) if b >= count)


def test_reliability_bins_match_sklearn_counts_banded_small_bins_suppressed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path, monkeypatch, n=80)
    run.predict()
    code, text = run.score()
    assert code == 0 and len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    report = ScoreReport.model_validate_json(text)
    y, s = _truth_and_scores(run)
    counts, _ = np.histogram(s, bins=10, range=(0, 1))
    rate, predicted = calibration_curve(y, s, n_bins=10, strategy="uniform")
    nonempty = iter(zip(rate, predicted, strict=True))
    assert [(b.lower, b.upper) for b in report.reliability] == [
        (round(i / 10, 2), round((i + 1) / 10, 2)) for i in range(10)
    ]
    for b, n in zip(report.reliability, counts, strict=True):
        if n == 0:
            assert b.count == 0 and not b.suppressed
            continue
        r, p = next(nonempty)
        if n < MIN_CELL:
            assert b.suppressed and b.count is None and b.mean_predicted is None and b.observed_rate is None
        else:
            assert b.count == _banded(int(n)) and not b.suppressed
            assert b.mean_predicted == pytest.approx(round(p / 0.05) * 0.05) and b.observed_rate == pytest.approx(
                round(r / 0.05) * 0.05
            )
    assert any(b.suppressed for b in report.reliability) or all(n == 0 or n >= MIN_CELL for n in counts)
    assert report.roc  # the ROC grid still fits next to them


def test_a_vendor_cannot_put_a_score_through_the_reliability_bins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path, monkeypatch, n=80)
    run.predict()
    doc = run.predictions()
    ids = sorted(doc["cases"])
    for i, cid in enumerate(ids):
        # 79 cases at 0.437 (the value to smuggle), one at 0.93 to flag a chosen case.
        doc["cases"][cid]["scores"] = {"abnormal": 0.93 if i == 0 else 0.437, "normal": 0.07 if i == 0 else 0.563}
    run.write(doc)
    code, text = run.score()
    bins = ScoreReport.model_validate_json(text).reliability
    assert code == 0
    shown = [b for b in bins if b.count]
    assert len(shown) == 1 and shown[0].mean_predicted == 0.45 and shown[0].count == 80  # 0.437 -> 0.45, 79 -> band 80
    flagged = next(b for b in bins if b.lower == 0.9)
    assert flagged.suppressed and flagged.mean_predicted is None and flagged.count is None


def test_dice_histogram_is_numpy_histogram_banded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, task="segmentation", n=20)
    run.predict()
    code, text = run.score()
    report = ScoreReport.model_validate_json(text)
    assert code == 0
    results = json.loads((run.work / "results.json").read_text())
    dice = [c["dice"] for c in results["perCase"].values()]
    counts, _ = np.histogram(dice, bins=10, range=(0, 1))
    assert len(report.dice_histogram) == 10
    for b, n in zip(report.dice_histogram, counts, strict=True):
        assert (b.suppressed, b.count) == ((True, None) if 0 < n < MIN_CELL else (False, _banded(int(n)) if n else 0))
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT


def test_froc_points_are_the_step_curve_at_the_fixed_rates() -> None:
    # Hand-built step curve: sensitivity reached without exceeding each FP rate.
    fp, sens = [0.0, 0.1, 0.3, 1.5, 5.0], [0.0, 0.2, 0.5, 0.7, 0.9]
    assert release.froc_released(fp, sens) == [
        (0.125, 0.2),
        (0.25, 0.2),
        (0.5, 0.5),
        (1.0, 0.5),
        (2.0, 0.7),
        (4.0, 0.7),
        (8.0, 0.9),
    ]
    # Sensitivity the vendor can set finely is put on the 0.01 grid; no lesions, no curve.
    assert release.froc_released([0.0, 0.1], [0.0, 0.123456])[0] == (0.125, 0.12)
    assert release.froc_released([0.0], [float("nan")]) == []


def test_perfect_detection_reports_full_sensitivity_at_every_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path, monkeypatch, task="detection", n=20)
    truth = json.loads((run.sample.truth_dir / "findings.json").read_text())
    cases = json.loads((run.work / "cases.json").read_text())["cases"]
    run.write(
        {
            "task": "detection",
            "cases": {
                cid: {
                    "findings": [
                        {"location": {"x": les["x"], "y": les["y"], "slice": les["slice"]}, "score": 0.9}
                        for les in truth[c["source"]]["lesions"]
                    ]
                }
                for cid, c in cases.items()
            },
        }
    )
    code, text = run.score()
    assert code == 0
    assert ScoreReport.model_validate_json(text).froc == [(t, 1.0) for t in release.FROC_FP_POINTS]


def test_withheld_metrics_withhold_the_curves_too() -> None:
    from lightbox.sandbox.scorer import released_curves

    bare = ScoreReport(task="classification", cases=5, scored=5)  # under the minimum cell: no metrics
    extras = {"reliability": [{"lower": 0.0, "upper": 0.1, "count": 5, "mean_predicted": 0.05, "observed_rate": 0.0}]}
    assert released_curves(bare, extras, [0.5] * 5, MIN_CELL) == {}


def test_the_run_record_keeps_the_curves() -> None:
    report = ScoreReport.model_validate({
        "task": "segmentation", "cases": 20, "scored": 20, "metrics": {"dice": {"value": 0.8}},
        "diceHistogram": [{"lower": 0.8, "upper": 0.9, "count": 20}], "froc": [[0.125, 0.5]],
        "roc": [[0.0, 0.0], [1.0, 1.0]], "reliability": [{"lower": 0.0, "upper": 0.1, "suppressed": True}],
    })
    record = RunRecord(name="v-r1", number=1, phase="Running")
    done = finish_record(
        record,
        outcome.Outcome("Succeeded", "Succeeded", "", report),
        factories.validation(),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert done.dice_histogram == report.dice_histogram and done.froc == [(0.125, 0.5)]
    assert done.roc == [(0.0, 0.0), (1.0, 1.0)] and done.reliability == report.reliability
