"""The synthetic dermatology dataset and the reference photo classifier (used by the photo
Validation end to end): the dataset passes the photo gate as written, and the classifier
ranks it well overall (AUC from scikit-learn, not the scorer) while missing more lesions on
the darkest skin types, the bias photosampledata documents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lightbox.api.run import StagerConfig
from lightbox.sandbox.deid.photos_verify import verify_photo_tree
from lightbox.sandbox.photosampledata import make_photo_dataset
from lightbox.sandbox.reference import photo_classifier
from lightbox.sandbox.stager import stage


def test_the_sample_passes_the_gate_and_the_classifier_shows_the_skin_type_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_photo_dataset(tmp_path / "skin", n_cases=48, seed=5)
    report = verify_photo_tree(data.studies_dir)
    assert report.ok, (report.violations, report.unreadable)
    assert report.cohort["skinType"] == dict.fromkeys(["I", "II", "III", "IV", "V", "VI"], 8)

    stage(data.studies_dir, tmp_path / "input", tmp_path / "work", StagerConfig(task="classification", format="photo",
                                                                                 labels=data.labels))
    monkeypatch.setenv("LIGHTBOX_INPUT_DIR", str(tmp_path / "input"))
    monkeypatch.setenv("LIGHTBOX_OUTPUT_DIR", str(tmp_path / "output"))
    assert photo_classifier.main([]) == 0
    predictions = json.loads((tmp_path / "output" / "predictions.json").read_text())["cases"]
    cases = json.loads((tmp_path / "work" / "cases.json").read_text())["cases"]
    labels = json.loads((data.truth_dir / "labels.json").read_text())
    y = np.array([labels[c["source"]]["label"] == "malignant" for c in cases.values()])
    p = np.array([predictions[case]["scores"]["malignant"] for case in cases])
    assert roc_auc_score(y, p) > 0.8
    skin = np.array([c["skinType"] for c in cases.values()])
    light, dark = np.isin(skin, ["I", "II"]), np.isin(skin, ["V", "VI"])
    sensitivity = {name: float((p[mask & y] >= 0.5).mean()) for name, mask in (("light", light), ("dark", dark))}
    assert sensitivity["dark"] < sensitivity["light"]
