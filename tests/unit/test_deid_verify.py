"""The verification gate: clean on the de-identifier's output, loud on the input, never shows values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from test_deid_leaks import FAMILY, ROWS, SAFE, build_planted, representative

from lightbox.sandbox.deid import VerificationReport, deidentify_tree, verify_tree
from lightbox.sandbox.deid.verify import age_band

KEY = b"verify-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("in")
    (root / "planted.dcm").write_bytes(build_planted())
    return root


@pytest.mark.parametrize("options", representative(), ids=lambda o: "+".join(o) or "basic")
def test_verify_passes_on_output(options: tuple[str, ...], planted_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = deidentify_tree(
        planted_dir, out, key=KEY, options=options, jobs=1, safe_private=SAFE, allow_burned_in=True
    )
    assert summary.written == 1 and summary.ok
    report = verify_tree(out, options, jobs=1, safe_private=SAFE)
    assert report.ok, report.violations
    assert report.files == 1 and report.errors == 0


def test_verify_reports_planted_attributes_on_input(planted_dir: Path) -> None:
    report = verify_tree(planted_dir, jobs=1)
    assert not report.ok
    tags = {v.tag for v in report.violations}
    keywords = {v.keyword for v in report.violations}
    assert {"(0010,0010)", "(0010,0020)", "(0010,0030)", "(0008,0080)", "(0020,000D)", "(0008,0050)"} <= tags
    assert {
        "PatientName",
        "PatientID",
        "PatientIdentityRemoved",
        "PrivateAttribute",
        "OverlayData",
        "CurveData",
    } <= keywords
    # Every row that the basic profile removes/replaces is reported, top level and nested alike.
    name = next(v for v in report.violations if v.tag == "(0010,0010)")
    assert name.occurrences == 2 and name.files == 1
    removed = sum(1 for tag, _ in ROWS if f"({tag >> 16:04X},{tag & 0xFFFF:04X})" in tags)
    assert removed > 0.9 * len(ROWS)


def test_report_never_contains_values(planted_dir: Path) -> None:
    text = verify_tree(planted_dir, jobs=1).model_dump_json(by_alias=True)
    assert FAMILY not in text and "LK0" not in text and "1931" not in text


def test_options_change_what_counts(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    out = tmp_path / "out"
    deidentify_tree(src, out, key=KEY, options=["retainPatientCharacteristics", "retainUIDs"], jobs=1)
    assert verify_tree(out, ["retainPatientCharacteristics", "retainUIDs"], jobs=1).ok
    strict = verify_tree(out, jobs=1)
    assert not strict.ok
    assert {"PatientSex", "PatientWeight", "SOPInstanceUID"} <= {v.keyword for v in strict.violations}


def test_report_shape_hash_and_cohort(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name, sex, age in (("a", "F", "034Y"), ("b", "M", "071Y"), ("c", "", "")):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientSex, ds.PatientAge = sex, age
        ds.StudyInstanceUID = pydicom.uid.generate_uid()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(src / f"{name}.dcm")
    out = tmp_path / "out"
    deidentify_tree(src, out, key=KEY, options=["retainPatientCharacteristics"], jobs=1)
    report = verify_tree(out, ["retainPatientCharacteristics"], jobs=1)
    assert isinstance(report, VerificationReport) and report.ok
    assert report.cohort["sex"] == {"F": 1, "M": 1, "unknown": 1}
    assert report.cohort["ageBand"] == {"18-39": 1, "60-79": 1, "unknown": 1}
    assert report.cohort["manufacturer"] == {"GE MEDICAL SYSTEMS": 3}
    assert report.cohort["modality"] == {"CT": 3}
    # The hash is stable, and changes with any byte of the tree.
    assert verify_tree(out, ["retainPatientCharacteristics"], jobs=2).content_hash == report.content_hash
    victim = next(out.rglob("*.dcm"))
    victim.write_bytes(victim.read_bytes() + b"\0\0")
    assert verify_tree(out, ["retainPatientCharacteristics"], jobs=1).content_hash != report.content_hash
    wire = json.loads(report.model_dump_json(by_alias=True))
    assert {"ok", "files", "violations", "errors", "contentHash", "cohort"} <= set(wire)


def test_unreadable_files_fail_the_gate(tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all, just text")
    report = verify_tree(tmp_path, jobs=1)
    assert not report.ok and report.errors == 1 and report.files == 1


def test_age_bands() -> None:
    assert [age_band(a) for a in ("005Y", "018Y", "039Y", "040Y", "079Y", "080Y", "030M", "010W", "")] == [
        "0-17",
        "18-39",
        "18-39",
        "40-59",
        "60-79",
        "80+",
        "0-17",
        "0-17",
        "unknown",
    ]
