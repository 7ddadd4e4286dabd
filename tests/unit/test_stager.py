"""The stage step: de-identification gate, input manifest, scorer-only cases.json."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from lightbox.api.run import EXIT_DATASET_CHANGED, EXIT_DATASET_UNREADABLE, EXIT_OK, EXIT_PHI_FOUND
from lightbox.sandbox import deidgate, stager
from lightbox.sandbox.contract import InputManifest
from lightbox.sandbox.sampledata import SAMPLE_DEID_OPTIONS, make_sample_dataset


def _env(monkeypatch: pytest.MonkeyPatch, tmp: Path, studies: Path, config: dict | None = None) -> dict[str, Path]:
    paths = {"input": tmp / "input", "work": tmp / "work", "term": tmp / "termination-log"}
    monkeypatch.setenv("LIGHTBOX_STUDIES_DIR", str(studies))
    monkeypatch.setenv("LIGHTBOX_INPUT_DIR", str(paths["input"]))
    monkeypatch.setenv("LIGHTBOX_WORK_DIR", str(paths["work"]))
    monkeypatch.setenv("LIGHTBOX_TERMINATION_LOG", str(paths["term"]))
    cfg = (
        {"task": "classification", "deidOptions": SAMPLE_DEID_OPTIONS}
        if config is None
        else {"task": "classification", **config}
    )
    monkeypatch.setenv("LIGHTBOX_STAGER_CONFIG", json.dumps(cfg))
    return paths


def test_stages_sample_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=6, seed=1, task="segmentation")
    paths = _env(
        monkeypatch,
        tmp_path,
        sample.studies_dir,
        {"deidOptions": SAMPLE_DEID_OPTIONS, "task": "segmentation", "labels": ["lesion"]},
    )
    assert stager.main([]) == EXIT_OK
    manifest = InputManifest.model_validate_json((paths["input"] / "manifest.json").read_text())
    assert manifest.task == "segmentation" and manifest.labels == ["lesion"]
    assert [c.id for c in manifest.cases] == [f"case-{i:04d}" for i in range(1, 7)]
    for case in manifest.cases:
        files = case.series[0].files
        assert len(files) == 3
        positions = [float(pydicom.dcmread(paths["input"] / f).ImagePositionPatient[2]) for f in files]
        assert positions == sorted(positions)
    cases = json.loads((paths["work"] / "cases.json").read_text())["cases"]
    assert sorted(c["source"] for c in cases.values()) == sorted(sample.cases)
    first = cases["case-0001"]
    assert set(first) >= {"patientId", "sex", "ageBand", "manufacturer", "site", "spacing", "shape"}
    assert first["site"].startswith("SITE-") and first["sex"] in ("M", "F")
    assert first["spacing"][0] > 0 and first["shape"][0] == 3
    # the vendor's input never names the dataset's folders
    assert not any(src in (paths["input"] / "manifest.json").read_text() for src in sample.cases)
    summary = json.loads(paths["term"].read_text())
    assert summary["cases"] == 6 and summary["files"] == 18


def test_max_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=5)
    paths = _env(monkeypatch, tmp_path, sample.studies_dir, {"deidOptions": SAMPLE_DEID_OPTIONS, "maxCases": 2})
    assert stager.main([]) == EXIT_OK
    assert len(json.loads((paths["input"] / "manifest.json").read_text())["cases"]) == 2


def test_refuses_identifiable_data_naming_attributes_not_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=4)
    for path in list(sample.studies_dir.rglob("*.dcm"))[:3]:
        ds = pydicom.dcmread(path)
        ds.PatientName = "DOE^JANE"
        ds.PatientBirthDate = "19700101"
        ds.save_as(path)
    paths = _env(monkeypatch, tmp_path, sample.studies_dir)
    assert stager.main([]) == EXIT_PHI_FOUND
    term = paths["term"].read_text()
    message = json.loads(term)
    assert message["reason"] == "PHIFound"
    assert "PatientName (0010,0010): 3 occurrences in 3 files" in message["message"]
    assert "PatientBirthDate" in message["message"]
    assert "DOE" not in term and "JANE" not in term and "1970" not in term
    assert not (paths["input"] / "manifest.json").exists()


def test_missing_identity_removed_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=2)
    path = next(sample.studies_dir.rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    del ds.PatientIdentityRemoved
    ds.save_as(path)
    paths = _env(monkeypatch, tmp_path, sample.studies_dir)
    assert stager.main([]) == EXIT_PHI_FOUND
    assert "PatientIdentityRemoved" in paths["term"].read_text()


def test_non_dicom_file_is_unreadable_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=2)
    (sample.studies_dir / sample.cases[0] / "notes.txt").write_text("not dicom")
    paths = _env(monkeypatch, tmp_path, sample.studies_dir)
    assert stager.main([]) == EXIT_DATASET_UNREADABLE
    assert json.loads(paths["term"].read_text())["reason"] == "DatasetUnreadable"


def test_missing_studies_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _env(monkeypatch, tmp_path, tmp_path / "nope")
    assert stager.main([]) == EXIT_DATASET_UNREADABLE
    assert json.loads(paths["term"].read_text())["reason"] == "DatasetUnreadable"


def test_fails_closed_when_the_declared_verifier_cannot_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise deidgate.VerifierUnavailable("the de-identification verifier failed to load: boom")

    monkeypatch.setattr(deidgate, "load_verifier", broken)
    sample = make_sample_dataset(tmp_path / "data", n_cases=2)
    paths = _env(monkeypatch, tmp_path, sample.studies_dir)
    assert stager.main([]) != EXIT_OK
    assert json.loads(paths["term"].read_text())["reason"] == "VerifierUnavailable"
    assert not (paths["input"] / "manifest.json").exists()


def test_invalid_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _env(monkeypatch, tmp_path, tmp_path, {"deidOptions": ["keepEverything"]})
    assert stager.main([]) == stager.EXIT_CONFIG_INVALID
    assert json.loads(paths["term"].read_text())["reason"] == "ConfigInvalid"


def test_absent_config_is_refused_since_the_task_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _env(monkeypatch, tmp_path, tmp_path)
    monkeypatch.delenv("LIGHTBOX_STAGER_CONFIG")
    assert stager.main([]) == 2
    message = json.loads(paths["term"].read_text())
    assert message["reason"] == "ConfigInvalid" and "task" in message["message"]


def test_sample_dataset_passes_the_real_verifier_with_its_options(tmp_path: Path) -> None:
    # Production fails closed when the verifier cannot load, so this must fail too, not skip.
    try:
        verifier, name = deidgate.load_verifier()
    except deidgate.VerifierUnavailable as exc:
        pytest.fail(f"the de-identification verifier cannot load: {exc}")
    sample = make_sample_dataset(tmp_path / "data", n_cases=4)
    report = verifier(sample.studies_dir, sample.deid_options)
    assert report.ok, [(v.keyword, v.occurrences) for v in report.violations]
    assert deidgate.error_count(report) == 0


def _verified_hash(studies: Path) -> str:
    """What the Dataset's verification step records (the same gate, run by verifystep)."""
    return deidgate.verify_tree(studies, SAMPLE_DEID_OPTIONS).content_hash


def test_studies_as_verified_are_staged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=4)
    config = {"deidOptions": SAMPLE_DEID_OPTIONS, "verifiedContentHash": _verified_hash(sample.studies_dir)}
    paths = _env(monkeypatch, tmp_path, sample.studies_dir, config)
    assert stager.main([]) == EXIT_OK
    assert json.loads(paths["term"].read_text())["contentHash"] == config["verifiedContentHash"]


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_studies_changed_since_verification_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=4)
    verified = _verified_hash(sample.studies_dir)
    first = sorted(sample.studies_dir.rglob("*.dcm"))[0]
    if change == "edit":
        ds = pydicom.dcmread(first)
        ds.InstanceNumber = 99  # not identifying: only the content differs
        ds.save_as(first)
    elif change == "add":
        (first.parent / "extra.dcm").write_bytes(first.read_bytes())
    else:
        first.unlink()
    paths = _env(
        monkeypatch, tmp_path, sample.studies_dir, {"deidOptions": SAMPLE_DEID_OPTIONS, "verifiedContentHash": verified}
    )
    assert stager.main([]) == EXIT_DATASET_CHANGED
    term = json.loads(paths["term"].read_text())
    assert term["reason"] == "DatasetChanged" and verified in term["message"] and "spec.revision" in term["message"]
    assert not (paths["input"] / "manifest.json").exists()  # nothing reached the vendor's input


def test_identifying_data_outranks_a_changed_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=4)
    verified = _verified_hash(sample.studies_dir)
    first = sorted(sample.studies_dir.rglob("*.dcm"))[0]
    ds = pydicom.dcmread(first)
    ds.PatientName = "Doe^Jane"
    ds.save_as(first)
    paths = _env(
        monkeypatch, tmp_path, sample.studies_dir, {"deidOptions": SAMPLE_DEID_OPTIONS, "verifiedContentHash": verified}
    )
    assert stager.main([]) == EXIT_PHI_FOUND
    assert json.loads(paths["term"].read_text())["reason"] == "PHIFound"


def with_spacing(studies: Path, slice_gap: float, pixel_spacing: tuple[float, float]) -> None:
    """Rewrite a sample's studies with the given slice positions and PixelSpacing (row, column)."""
    for path in studies.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        ds.ImagePositionPatient = [0.0, 0.0, (int(ds.InstanceNumber) - 1) * slice_gap]
        ds.SliceThickness = "7"  # deliberately not the gap: spacing comes from the positions
        ds.save_as(path)


def test_spacing_is_slice_row_column_in_millimetres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=2, seed=1, task="segmentation")
    # DICOM PixelSpacing is (distance between rows, distance between columns); all three differ
    with_spacing(sample.studies_dir, 2.5, (0.5, 0.8))
    paths = _env(
        monkeypatch, tmp_path, sample.studies_dir, {"deidOptions": SAMPLE_DEID_OPTIONS, "task": "segmentation"}
    )
    assert stager.main([]) == EXIT_OK
    cases = json.loads((paths["work"] / "cases.json").read_text())["cases"]
    assert [c["spacing"] for c in cases.values()] == [[2.5, 0.5, 0.8], [2.5, 0.5, 0.8]]


def test_spacing_without_positions_falls_back_to_the_slice_spacing_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=1, seed=1, task="segmentation")
    for path in sample.studies_dir.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.PixelSpacing, ds.SpacingBetweenSlices, ds.SliceThickness = ["0.3", "0.9"], "1.25", "3"
        ds.save_as(path)
    paths = _env(
        monkeypatch, tmp_path, sample.studies_dir, {"deidOptions": SAMPLE_DEID_OPTIONS, "task": "segmentation"}
    )
    assert stager.main([]) == EXIT_OK
    (case,) = json.loads((paths["work"] / "cases.json").read_text())["cases"].values()
    assert case["spacing"] == [1.25, 0.3, 0.9]
