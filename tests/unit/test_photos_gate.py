"""The photo PHI gate, the photo tree de-identifier and the stage step for photo datasets.

The gate must name what it finds (keyword, location, counts) and never a value; a photo
tree de-identified by ``lightbox deid --format photo`` must pass it; the content hash is
the documented construction, recomputed here by hand.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import photo_samples as ps
import pydicom
import pytest
from pydicom.data import get_testdata_file

from lightbox.api.run import ScorerConfig, StagerConfig
from lightbox.sandbox import scorer
from lightbox.sandbox.deid import deidentify_tree
from lightbox.sandbox.deid.photos_tree import deidentify_photo_tree
from lightbox.sandbox.deid.photos_verify import verify_photo_tree
from lightbox.sandbox.stager import StageError, stage

KEY = b"photo-gate-test-key-0123456789ab"
SOURCE_NAMES = ("Jane_Doe_MRN12345", "John_Roe_MRN67890", "Mary_Major_MRN24680")


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    """Three patients' photos as a clinic exports them: names in folders and files, full metadata."""
    src = tmp_path / "raw"
    for i, name in enumerate(SOURCE_NAMES):
        (src / name).mkdir(parents=True)
        (src / name / f"{name}_left_arm.JPG").write_bytes(ps.planted_jpeg(seed=i, orientation=6 if i == 0 else 1))
        (src / name / "dermoscopy.png").write_bytes(ps.planted_png(seed=10 + i))
    (src / SOURCE_NAMES[2] / "IMG_0001.HEIC").write_bytes(ps.planted_heic(seed=20))
    (src / "cohort.csv").write_text(
        "case,patient,bodySite,skinType,sex\n"
        f"{SOURCE_NAMES[0]},MRN12345,upper extremity,V,F\n"
        f"{SOURCE_NAMES[1]},MRN67890,posterior torso,II,M\n"
        f"{SOURCE_NAMES[2]},MRN24680,upper extremity,V,\n"
    )
    return src


def test_the_gate_names_gps_date_thumbnail_and_serial_with_counts_and_no_values(raw: Path) -> None:
    report = verify_photo_tree(raw)
    assert not report.ok
    by_keyword = {v.keyword: v for v in report.violations}
    # Three JPEGs carry a thumbnail; JPEGs and PNGs (6 files) carry GPS, dates and a serial.
    assert (by_keyword["Thumbnail"].tag, by_keyword["Thumbnail"].files) == ("EXIF IFD1", 3)
    assert (by_keyword["GPSInfo"].tag, by_keyword["GPSInfo"].files) == ("EXIF 0x8825", 6)
    assert (by_keyword["DateTimeOriginal"].tag, by_keyword["DateTimeOriginal"].occurrences) == ("EXIF 0x9003", 6)
    assert (by_keyword["BodySerialNumber"].tag, by_keyword["BodySerialNumber"].files) == ("EXIF 0xA431", 6)
    assert by_keyword["HEICContainer"].files == 1
    # the sheet's ids are not pseudonyms: 3 rows of one file
    assert (by_keyword["PatientID"].tag, by_keyword["PatientID"].occurrences, by_keyword["PatientID"].files) == (
        "cohort.csv patient", 3, 1
    )
    text = report.model_dump_json(by_alias=True)
    for value in [*ps.PLANTED.values(), b"MRN12345", *(n.encode() for n in SOURCE_NAMES)]:
        assert value.decode() not in text


def test_a_de_identified_photo_tree_passes_the_gate_and_keeps_no_identifier(raw: Path, tmp_path: Path) -> None:
    dst = tmp_path / "deid"
    summary = deidentify_photo_tree(raw, dst, key=KEY, jobs=1)
    assert (summary.files, summary.written, summary.errors) == (7, 7, 0), summary.refused
    report = verify_photo_tree(dst)
    assert report.ok, (report.violations, report.unreadable)
    assert report.cohort["skinType"] == {"II": 1, "V": 2}
    assert report.cohort["bodySite"] == {"posterior torso": 1, "upper extremity": 2}
    assert report.cohort["sex"] == {"F": 1, "M": 1, "unknown": 1}
    outputs = sorted(p for p in dst.rglob("*") if p.is_file())
    assert [p.suffix for p in outputs].count(".png") == 4  # 3 PNG + the HEIC
    for path in outputs:
        data = path.read_bytes()
        assert [k for k, v in ps.PLANTED.items() if v in data] == [], path
        for name in (*SOURCE_NAMES, "MRN12345", "MRN67890", "MRN24680", "left_arm", "IMG_0001"):
            assert name not in path.relative_to(dst).as_posix()
            assert name.encode() not in data


def test_the_sheet_patient_pseudonym_is_the_one_dicom_data_of_the_patient_gets(raw: Path, tmp_path: Path) -> None:
    deidentify_photo_tree(raw, tmp_path / "photos", key=KEY, jobs=1)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.PatientID = "MRN12345"
    (tmp_path / "ct").mkdir()
    ct.save_as(tmp_path / "ct" / "ct.dcm", enforce_file_format=True)
    deidentify_tree(tmp_path / "ct", tmp_path / "ct-out", key=KEY, jobs=1)
    dicom_pseudonym = str(pydicom.dcmread(next((tmp_path / "ct-out").rglob("*.dcm"))).PatientID)
    rows = (tmp_path / "photos" / "cohort.csv").read_text().splitlines()
    assert sum(dicom_pseudonym in row and ",upper extremity,V,F," in row for row in rows) == 1


def test_a_photo_that_cannot_be_parsed_is_refused_and_nothing_of_it_is_written(raw: Path, tmp_path: Path) -> None:
    bad = raw / SOURCE_NAMES[1] / "broken.jpg"
    bad.write_bytes(ps.planted_jpeg(seed=30)[:3000])
    summary = deidentify_photo_tree(raw, tmp_path / "out", key=KEY, jobs=1)
    assert summary.errors == 1 and summary.written == 7
    assert summary.refused == [(f"{SOURCE_NAMES[1]}/broken.jpg", summary.refused[0][1])]
    assert "truncated" in summary.refused[0][1]
    assert len([p for p in (tmp_path / "out").rglob("*") if p.is_file()]) == 8  # 7 photos + cohort.csv


def test_a_file_that_does_not_parse_fails_the_gate_with_its_reason(raw: Path, tmp_path: Path) -> None:
    dst = tmp_path / "deid"
    deidentify_photo_tree(raw, dst, key=KEY, jobs=1)
    victim = next(p for p in dst.rglob("*.png"))
    victim.write_bytes(victim.read_bytes()[:-20])
    report = verify_photo_tree(dst)
    assert not report.ok and report.errors == 1
    [line] = report.unreadable
    assert line.startswith(f"{victim.relative_to(dst).as_posix()}: PNG: chunk ")
    assert line.endswith("is truncated (length runs past the end)")


def test_the_content_hash_is_the_documented_construction_and_covers_the_sheet(raw: Path, tmp_path: Path) -> None:
    dst = tmp_path / "deid"
    deidentify_photo_tree(raw, dst, key=KEY, jobs=1)
    expected = hashlib.sha256()
    for path in sorted(p for p in dst.rglob("*") if p.is_file()):
        rel = path.relative_to(dst).as_posix()
        expected.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    before = verify_photo_tree(dst).content_hash
    assert before == expected.hexdigest()
    sheet = dst / "cohort.csv"
    sheet.write_text(sheet.read_text().replace(",V,", ",VI,", 1))
    assert verify_photo_tree(dst).content_hash != before


# --- stage step -----------------------------------------------------------------------------


def test_stage_lays_out_photos_and_hands_skin_type_and_body_site_to_the_scorer(raw: Path, tmp_path: Path) -> None:
    dst = tmp_path / "deid"
    deidentify_photo_tree(raw, dst, key=KEY, jobs=1)
    verified = verify_photo_tree(dst).content_hash
    config = StagerConfig(
        task="classification", format="photo", labels=["benign", "malignant"], verified_content_hash=verified
    )
    result = stage(dst, tmp_path / "input", tmp_path / "work", config)
    assert (result.cases, result.files, result.verifier) == (3, 7, "photo")
    manifest = json.loads((tmp_path / "input" / "manifest.json").read_text())
    assert sorted(len(c["series"]) for c in manifest["cases"]) == [2, 2, 3]
    for case in manifest["cases"]:
        for series in case["series"]:
            assert series["modality"] == "XC" and len(series["files"]) == 1
            assert (tmp_path / "input" / series["files"][0]).is_file()
    assert not list((tmp_path / "input").rglob("cohort.csv"))  # the sheet never reaches the vendor
    cases = json.loads((tmp_path / "work" / "cases.json").read_text())["cases"]
    assert sorted((c["skinType"], c["bodySite"]) for c in cases.values()) == [
        ("II", "posterior torso"), ("V", "upper extremity"), ("V", "upper extremity")
    ]
    # The scorer groups by these keys: hand count, 2 of skin type V, 1 of II.
    cfg = ScorerConfig(task="classification", subgroups=["skinType", "bodySite"], min_subgroup_size=1)
    groups = scorer.subgroup_results(cfg, list(cases), cases, lambda mask: {})
    assert {g: r.n for g, r in groups["skinType"].items()} == {"II": 1, "V": 2}
    assert {g: r.n for g, r in groups["bodySite"].items()} == {"posterior torso": 1, "upper extremity": 2}


def test_stage_refuses_photos_with_metadata_naming_it_never_its_value(raw: Path, tmp_path: Path) -> None:
    config = StagerConfig(task="classification", format="photo")
    with pytest.raises(StageError) as refused:
        stage(raw, tmp_path / "input", tmp_path / "work", config)
    assert refused.value.reason == "PHIFound"
    assert "GPSInfo (EXIF 0x8825): 6 occurrences in 6 files" in refused.value.message
    for value in ps.PLANTED.values():
        assert value.decode() not in refused.value.message
    assert not (tmp_path / "input").exists()


def test_stage_refuses_a_changed_photo_dataset(raw: Path, tmp_path: Path) -> None:
    dst = tmp_path / "deid"
    deidentify_photo_tree(raw, dst, key=KEY, jobs=1)
    config = StagerConfig(task="classification", format="photo", verified_content_hash="0" * 64)
    with pytest.raises(StageError) as refused:
        stage(dst, tmp_path / "input", tmp_path / "work", config)
    assert refused.value.reason == "DatasetChanged"


def test_a_photo_dataset_staged_as_dicom_is_refused(raw: Path, tmp_path: Path) -> None:
    """Fail closed: without format photo, photos are not readable DICOM."""
    dst = tmp_path / "deid"
    deidentify_photo_tree(raw, dst, key=KEY, jobs=1)
    with pytest.raises(StageError) as refused:
        stage(dst, tmp_path / "input", tmp_path / "work", StagerConfig(task="classification"))
    assert refused.value.reason in ("DatasetUnreadable", "PHIFound")


def test_the_gate_accepts_only_the_exact_orientation_block() -> None:
    """Data hidden after the IFDs of an otherwise harmless EXIF block is found."""
    from lightbox.sandbox.deid.photos import minimal_exif, strip_photo
    from lightbox.sandbox.deid.photos_verify import photo_findings

    rotated = strip_photo(ps.planted_jpeg(seed=40, orientation=6)).data
    assert photo_findings(rotated) == {}
    block = minimal_exif(6)
    smuggled = rotated.replace(ps.segment(0xE1, block), ps.segment(0xE1, block + b"Jane Planted Doe"))
    assert smuggled != rotated
    assert photo_findings(smuggled) == {("ExifBlock", "JPEG APP1"): 1}


def test_the_gate_names_icc_device_text_and_dates(raw: Path) -> None:
    found = {(v.keyword, v.tag): v.files for v in verify_photo_tree(raw).violations}
    assert found[("ICCDeviceTag", "JPEG APP2 ICC dmdd")] == 3
    assert found[("ICCDeviceTag", "PNG iCCP dmdd")] == 3
    assert found[("ICCCreationDate", "JPEG APP2 ICC header")] == 3


@pytest.mark.parametrize("packaging", ["monai-map", "grand-challenge"])
def test_photos_are_not_laid_out_for_another_packaging(packaging: str, raw: Path, tmp_path: Path) -> None:
    dst = tmp_path / "deid"
    deidentify_photo_tree(raw, dst, key=KEY, jobs=1)
    config = StagerConfig(task="classification", format="photo", packaging=packaging)  # type: ignore[arg-type]
    with pytest.raises(StageError) as refused:
        stage(dst, tmp_path / "input", tmp_path / "work", config)
    assert (refused.value.reason, refused.value.exit_code) == ("ConfigInvalid", 2)
    assert packaging in refused.value.message


def test_an_unreadable_photo_stops_the_stage_step_with_its_reason_and_no_path(raw: Path, tmp_path: Path) -> None:
    dst = tmp_path / "clean"
    deidentify_photo_tree(raw, dst, key=KEY, jobs=1)
    # A dataset not made by lightbox deid: its folder carries a name.
    shutil.move(next(p for p in dst.iterdir() if p.is_dir()), dst / "Jane_Doe_MRN12345")
    victim = next((dst / "Jane_Doe_MRN12345").iterdir())
    victim.write_bytes(victim.read_bytes()[:100])
    (dst / "cohort.csv").write_text("case\n" + "".join(f"{p.name}\n" for p in dst.iterdir() if p.is_dir()))
    with pytest.raises(StageError) as refused:
        stage(dst, tmp_path / "input", tmp_path / "work", StagerConfig(task="classification", format="photo"))
    assert refused.value.reason == "DatasetUnreadable"
    assert "truncated" in refused.value.message
    assert "Jane" not in refused.value.message and "MRN" not in refused.value.message
