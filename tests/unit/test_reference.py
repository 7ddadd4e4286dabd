"""Reference algorithms and the sample dataset they run on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lightbox.api.run import StagerConfig
from lightbox.sandbox.deidgate import verify_tree
from lightbox.sandbox.isolation import IsolationUnavailable, run_isolated
from lightbox.sandbox.metrics import classification as cls
from lightbox.sandbox.metrics import segmentation as seg
from lightbox.sandbox.reference import classifier, misbehave, segmenter
from lightbox.sandbox.sampledata import make_sample_dataset
from lightbox.sandbox.stager import stage


def _staged(tmp: Path, monkeypatch: pytest.MonkeyPatch, task: str, n: int) -> tuple[dict, dict, Path]:
    sample = make_sample_dataset(tmp / "data", n_cases=n, seed=0, task=task)  # type: ignore[arg-type]
    stage(sample.studies_dir, tmp / "input", tmp / "work", StagerConfig(task=task, labels=sample.labels,
          deid_options=sample.deid_options), verifier=verify_tree)
    monkeypatch.setenv("LIGHTBOX_INPUT_DIR", str(tmp / "input"))
    monkeypatch.setenv("LIGHTBOX_OUTPUT_DIR", str(tmp / "output"))
    cases = json.loads((tmp / "work" / "cases.json").read_text())["cases"]
    return cases, {"truth": sample.truth_dir}, tmp / "output"


def test_sample_dataset_is_deterministic_and_varied(tmp_path: Path) -> None:
    a = make_sample_dataset(tmp_path / "a", n_cases=10, seed=4)
    b = make_sample_dataset(tmp_path / "b", n_cases=10, seed=4)
    c = make_sample_dataset(tmp_path / "c", n_cases=10, seed=5)
    assert a.cases == b.cases != c.cases
    assert (a.truth_dir / "labels.json").read_text() == (b.truth_dir / "labels.json").read_text()
    headers = [pydicom.dcmread(p) for p in sorted(a.studies_dir.rglob("*.dcm"))]
    assert len(headers) == 10
    assert {h.PatientIdentityRemoved for h in headers} == {"YES"}
    assert all(h.StudyInstanceUID.startswith("2.25.") and h.SOPInstanceUID.startswith("2.25.") for h in headers)
    assert "InstitutionName" not in headers[0] and "PatientBirthDate" not in headers[0]
    assert len({h.Manufacturer for h in headers}) > 1 and len({h.PatientSex for h in headers}) > 1
    assert all(h.pixel_array.shape == (h.Rows, h.Columns) for h in headers)
    assert verify_tree(a.studies_dir, a.deid_options).ok


def test_honest_classifier_predicts_the_sample_partly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases, dirs, output = _staged(tmp_path, monkeypatch, "classification", 40)
    assert classifier.main([]) == 0
    preds = json.loads((output / "predictions.json").read_text())["cases"]
    labels = json.loads((dirs["truth"] / "labels.json").read_text())
    y = np.array([labels[cases[c]["source"]]["label"] == "abnormal" for c in sorted(cases)])
    s = np.array([preds[c]["scores"]["abnormal"] for c in sorted(cases)])
    assert 0.7 <= cls.auc(y, s) < 1.0


def test_honest_segmenter_overlaps_the_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases, dirs, output = _staged(tmp_path, monkeypatch, "segmentation", 10)
    assert segmenter.main([]) == 0
    preds = json.loads((output / "predictions.json").read_text())["cases"]
    dice = []
    for cid, info in cases.items():
        pred = np.load(output / preds[cid]["mask"])["mask"]
        truth = np.load(dirs["truth"] / "masks" / f"{info['source']}.npz")["mask"]
        dice.append(seg.dice_iou(pred, truth)[0])
    assert np.mean(dice) > 0.85


def test_truth_reading_cheat_works_unconfined_and_is_contained_in_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases, dirs, output = _staged(tmp_path, monkeypatch, "classification", 12)
    monkeypatch.setenv("LIGHTBOX_TRUTH_DIR", str(dirs["truth"]))
    assert misbehave.main(["read-truth"]) == 0  # not isolated: it reads the truth
    (output / "predictions.json").unlink()
    env = {"PATH": "/usr/bin:/bin", "LIGHTBOX_INPUT_DIR": str(tmp_path / "input"), "LIGHTBOX_OUTPUT_DIR": str(output),
           "LIGHTBOX_TRUTH_DIR": str(dirs["truth"])}
    try:
        r = run_isolated([sys.executable, "-m", "lightbox.sandbox.reference.misbehave", "read-truth"], env=env,
                         read_only=[tmp_path / "input"], hidden=[dirs["truth"]], timeout=60)
    except IsolationUnavailable as exc:
        pytest.skip(exc.reason)
    assert r.returncode == 1 and b"cannot read ground truth" in r.stderr
    assert not (output / "predictions.json").exists()


def test_unknown_mode_is_a_usage_error() -> None:
    assert misbehave.main(["launch-missiles"]) == 2
    assert set(misbehave.MODES) >= {"network", "read-truth", "flood", "hang", "malformed", "leak-phi"}


def test_detector_finds_the_sample_lesions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightbox.sandbox.metrics import detection as det
    from lightbox.sandbox.reference import detector

    cases, dirs, output = _staged(tmp_path, monkeypatch, "detection", 12)
    assert detector.main([]) == 0
    preds = json.loads((output / "predictions.json").read_text())["cases"]
    truth = json.loads((dirs["truth"] / "findings.json").read_text())
    findings = {
        c: [
            det.Finding(f["location"]["x"], f["location"]["y"], f["location"]["slice"], f["score"])
            for f in preds[c]["findings"]
        ]
        for c in cases
    }
    lesions = {c: [det.Lesion(**lesion) for lesion in truth[info["source"]]["lesions"]] for c, info in cases.items()}
    assert det.sensitivity_at(det.match(findings, lesions), [1.0])[0] > 0.8
