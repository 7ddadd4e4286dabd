"""A slide dataset's cohort sheet (specimenSite, stain, sex, ageBand, patient): validated before
de-identification, written keyed by the cases' output folders with pseudonymous patients,
checked by the gate (counts, never values), and carried into cases.json for the subgroups."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import slide_builders as sb
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from lightbox.api.run import ScorerConfig, StagerConfig
from lightbox.sandbox.cohortsheet import COLUMNS, SLIDE_COLUMNS, CohortSheetError, parse_sheet
from lightbox.sandbox.deid import verify_tree
from lightbox.sandbox.deid.cli import main as deid_cli
from lightbox.sandbox.stager import stage

KEY = b"a-secret-key-for-the-cohort-tests"
RAW_PATIENTS = ("MRN-0042", "MRN-0043", "MRN-0042")
SHEET = (
    "case,patient,specimenSite,stain,sex,ageBand\n"
    "case0,MRN-0042,breast,H&E,F,40-59\n"
    "case1,MRN-0043,prostate,IHC,M,60-79\n"
    "case2,MRN-0042,breast,IHC,F,40-59\n"
)


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    for i in range(3):
        (root / f"case{i}").mkdir(parents=True)
        sb.write_generic(root / f"case{i}" / f"{sb.FILENAME}-{i}.tif")
    (root / "cohort.csv").write_text(SHEET, encoding="utf-8")
    return root


def _deid(src: Path, dst: Path, tmp_path: Path, fmt: str = "slide-tiff") -> int:
    key = tmp_path / "key"
    key.write_bytes(KEY)
    return deid_cli([str(src), str(dst), "--key-file", str(key), "-j", "1", "--format", fmt])


def _dicom_pseudonym(tmp_path: Path, patient_id: str) -> str:
    """The pseudonym the DICOM path gives ``patient_id`` under the same key (the reference the
    sheet's patients must agree with: one patient, one pseudonym across formats)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "OT"
    ds.PatientID, ds.PatientName, ds.BurnedInAnnotation = patient_id, "SOME^ONE", "NO"
    src = tmp_path / f"dicom-{patient_id}" / "in"
    src.mkdir(parents=True)
    ds.save_as(src / "x.dcm", enforce_file_format=True)
    assert _deid(src, src.parent / "out", tmp_path, "dicom") == 0
    [out] = list((src.parent / "out").rglob("*.dcm"))
    return str(pydicom.dcmread(out).PatientID)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        return {row["case"]: row for row in csv.DictReader(fh)}


def test_the_sheet_comes_out_keyed_by_the_output_folders_with_pseudonymous_patients(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _deid(raw, out, tmp_path) == 0
    folders = {p.parent.name: p for p in out.rglob("*.tif")}
    rows = _rows(out / "cohort.csv")
    assert set(rows) == set(folders)  # every row names the folder its case's slide is in
    text = (out / "cohort.csv").read_text()
    assert "MRN" not in text and "case0" not in text
    expected = {pid: _dicom_pseudonym(tmp_path, pid) for pid in set(RAW_PATIENTS)}
    by_site = sorted((r["specimenSite"], r["stain"], r["sex"], r["ageBand"], r["patient"]) for r in rows.values())
    assert by_site == sorted(
        [
            ("breast", "H&E", "F", "40-59", expected["MRN-0042"]),
            ("prostate", "IHC", "M", "60-79", expected["MRN-0043"]),
            ("breast", "IHC", "F", "40-59", expected["MRN-0042"]),
        ]
    )
    report = verify_tree(out, jobs=1)
    assert report.ok, (report.violations, report.unreadable)
    # hand count of the sheet above
    assert report.cohort["specimenSite"] == {"breast": 2, "prostate": 1}
    assert report.cohort["stain"] == {"H&E": 1, "IHC": 2}
    assert report.cohort["sex"] == {"F": 2, "M": 1}
    assert report.cohort["modality"] == {"SM": 3}


def test_the_gate_counts_raw_patient_ids_in_the_sheet_never_showing_them(raw: Path) -> None:
    report = verify_tree(raw, jobs=1)
    found = {(v.keyword, v.tag): v.occurrences for v in report.violations}
    assert found[("PatientID", "cohort.csv patient")] == 3
    assert "MRN" not in report.model_dump_json()


def test_an_invalid_sheet_stops_deid_before_any_slide_naming_line_and_column(raw: Path, tmp_path: Path, capsys) -> None:
    (raw / "cohort.csv").write_text(SHEET.replace("prostate", "Jane Doe's prostate"), encoding="utf-8")
    assert _deid(raw, tmp_path / "out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "line 3, column specimenSite: not an allowed value" in err and "Jane" not in err
    assert not (tmp_path / "out").exists()
    report = verify_tree(raw, jobs=1)
    assert report.errors == 1 and any(u.startswith("cohort.csv: ") for u in report.unreadable)


@pytest.mark.parametrize(
    "text, columns, expected",
    [
        ("case,skinType\na,IV\n", SLIDE_COLUMNS, "column 2 is not a known column; allowed columns: case, patient"),
        ("case,stain\na,H&E\n", COLUMNS, "column 2 is not a known column"),
        ("case,stain\na,Masson\n", SLIDE_COLUMNS, "line 2, column stain: not an allowed value; allowed: H&E, IHC"),
    ],
)
def test_each_format_takes_its_own_columns(text: str, columns: tuple[str, ...], expected: str) -> None:
    with pytest.raises(CohortSheetError, match=expected.replace("(", r"\(")):
        parse_sheet(text, columns=columns)


def test_the_stage_step_carries_the_sheet_into_cases_json(raw: Path, tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    assert _deid(raw, studies, tmp_path) == 0
    rows = _rows(studies / "cohort.csv")
    config = StagerConfig(task="classification", format="slide-tiff", labels=["tumour"])
    stage(studies, tmp_path / "input", tmp_path / "work", config)
    cases = json.loads((tmp_path / "work" / "cases.json").read_text())["cases"]
    for case in cases.values():
        row = rows[case["source"]]
        assert (case["specimenSite"], case["stain"], case["sex"], case["ageBand"], case["patientId"]) == (
            row["specimenSite"], row["stain"], row["sex"], row["ageBand"], row["patient"],
        )
        assert case["manufacturer"] == "unknown"  # the builder's generic TIFF names no maker
    assert not (tmp_path / "input" / "cohort.csv").exists()  # the sheet never reaches the vendor
    dimensions = ["stain", "specimenSite"]
    assert ScorerConfig(task="classification", subgroups=dimensions).subgroups == dimensions  # the API takes them
