"""The stager's PHI gate: which verifier it loads, and the minimal fallback check (mutmut survivors).

The fallback stands in only when the deid package offers no verifier, but it is still a gate:
each attribute it must find is planted here one at a time, in a file that is otherwise clean.
Tags are DICOM's (PS3.6), written out by hand.
"""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from lightbox.sandbox import deidgate
from lightbox.sandbox.deidgate import Violation, minimal_verify_tree


def clean(**changes: object) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for elem in list(ds):
        if elem.tag.is_private:
            del ds[elem.tag]
    for keyword in (
        "PatientName", "PatientBirthDate", "OtherPatientIDs", "OtherPatientIDsSequence", "PatientAddress",
        "PatientTelephoneNumbers", "ReferringPhysicianName", "InstitutionName", "InstitutionAddress", "AccessionNumber",
    ):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PatientIdentityRemoved = "YES"
    ds.PatientSex, ds.PatientAge, ds.Manufacturer, ds.Modality = "F", "045Y", "Acme", "CT"
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_clean_file_passes_and_is_counted(tmp_path: Path) -> None:
    write(clean(), tmp_path / "a" / "1.dcm")
    report = minimal_verify_tree(tmp_path)
    assert (report.ok, report.files, report.violations, report.errors) == (True, 1, [], 0)


@pytest.mark.parametrize(
    ("keyword", "value", "tag"),
    [
        ("PatientName", "Doe^Jane", "(0010,0010)"),
        ("PatientBirthDate", "19700101", "(0010,0030)"),
        ("OtherPatientIDs", "X1", "(0010,1000)"),
        ("PatientAddress", "1 Main St", "(0010,1040)"),
        ("PatientTelephoneNumbers", "555", "(0010,2154)"),
        ("ReferringPhysicianName", "Who^Dr", "(0008,0090)"),
        ("InstitutionName", "General", "(0008,0080)"),
        ("InstitutionAddress", "2 Side St", "(0008,0081)"),
        ("AccessionNumber", "A123", "(0008,0050)"),
    ],
)
def test_each_identifying_attribute_is_found_and_named(tmp_path: Path, keyword: str, value: str, tag: str) -> None:
    write(clean(**{keyword: value}), tmp_path / "s" / "1.dcm")
    write(clean(**{keyword: value}), tmp_path / "s" / "2.dcm")
    write(clean(), tmp_path / "s" / "3.dcm")
    report = minimal_verify_tree(tmp_path)
    assert report.ok is False
    assert report.violations == [Violation(keyword, tag, 2, 2)]


def test_other_patient_ids_sequence_is_found(tmp_path: Path) -> None:
    item = Dataset()
    item.PatientID = "OLD-1"
    write(clean(OtherPatientIDsSequence=[item]), tmp_path / "1.dcm")
    assert minimal_verify_tree(tmp_path).violations == [Violation("OtherPatientIDsSequence", "(0010,1002)", 1, 1)]


@pytest.mark.parametrize("value", ["", " ", "\0", "  \0 "])
def test_padding_only_counts_as_empty(tmp_path: Path, value: str) -> None:
    ds = clean()
    ds.add_new(0x00100010, "PN", value)
    write(ds, tmp_path / "1.dcm")
    assert minimal_verify_tree(tmp_path).ok


def test_an_empty_sequence_counts_as_empty(tmp_path: Path) -> None:
    write(clean(OtherPatientIDsSequence=[]), tmp_path / "1.dcm")
    assert minimal_verify_tree(tmp_path).ok


def test_institution_may_stay_only_with_its_option(tmp_path: Path) -> None:
    write(clean(InstitutionName="General", PatientName="Doe^Jane"), tmp_path / "1.dcm")
    report = minimal_verify_tree(tmp_path, ["retainInstitutionIdentity"])
    assert report.violations == [Violation("PatientName", "(0010,0010)", 1, 1)]  # the option allows nothing else


@pytest.mark.parametrize("flag", [None, "NO", "", "maybe"])
def test_identity_removed_must_say_yes(tmp_path: Path, flag: str | None) -> None:
    ds = clean()
    if flag is None:
        del ds.PatientIdentityRemoved
    else:
        ds.PatientIdentityRemoved = flag
    write(ds, tmp_path / "1.dcm")
    assert minimal_verify_tree(tmp_path).violations == [Violation("PatientIdentityRemoved", "(0012,0062)", 1, 1)]


def test_identity_removed_is_read_case_blind(tmp_path: Path) -> None:
    write(clean(PatientIdentityRemoved="yes"), tmp_path / "1.dcm")
    assert minimal_verify_tree(tmp_path).ok


def test_private_attributes_need_their_option(tmp_path: Path) -> None:
    ds = clean()
    ds.add_new(0x00091010, "LO", "vendor private")
    write(ds, tmp_path / "1.dcm")
    assert minimal_verify_tree(tmp_path).violations == [Violation("PrivateAttribute", "(gggg,eeee)", 1, 1)]
    assert minimal_verify_tree(tmp_path, ["retainSafePrivate"]).ok


def test_violations_are_sorted_by_keyword_and_counted_per_file(tmp_path: Path) -> None:
    write(clean(PatientName="A^B", AccessionNumber="1"), tmp_path / "1.dcm")
    write(clean(PatientName="C^D"), tmp_path / "2.dcm")
    assert minimal_verify_tree(tmp_path).violations == [
        Violation("AccessionNumber", "(0008,0050)", 1, 1),
        Violation("PatientName", "(0010,0010)", 2, 2),
    ]


def test_unreadable_files_are_errors_not_passes(tmp_path: Path) -> None:
    write(clean(), tmp_path / "1.dcm")
    (tmp_path / "notes.txt").write_text("not DICOM")
    report = minimal_verify_tree(tmp_path)
    assert (report.ok, report.files, report.errors, report.violations) == (False, 2, 1, [])


def test_content_hash_covers_names_and_bytes(tmp_path: Path) -> None:
    # SHA-256 over, in path order, each relative path, a NUL and the SHA-256 of its bytes.
    first = write(clean(), tmp_path / "a" / "1.dcm")
    second = write(clean(PatientAge="030Y"), tmp_path / "b" / "2.dcm")
    expected = hashlib.sha256()
    for path, name in ((first, "a/1.dcm"), (second, "b/2.dcm")):
        expected.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    assert minimal_verify_tree(tmp_path).content_hash == expected.hexdigest()


def test_cohort_counts_each_study_once(tmp_path: Path) -> None:
    write(clean(StudyInstanceUID="1.2.3", PatientSex="F", PatientAge="045Y"), tmp_path / "s1" / "1.dcm")
    write(clean(StudyInstanceUID="1.2.3", PatientSex="F", PatientAge="045Y"), tmp_path / "s1" / "2.dcm")
    write(
        clean(StudyInstanceUID="1.2.4", PatientSex="m", PatientAge="", Manufacturer="", Modality="mr"),
        tmp_path / "s2" / "1.dcm",
    )
    write(
        clean(StudyInstanceUID="1.2.5", PatientSex="X", PatientAge="085Y", Manufacturer="Other"),
        tmp_path / "s3" / "1.dcm",
    )
    assert minimal_verify_tree(tmp_path).cohort == {
        "sex": {"F": 1, "M": 1, "unknown": 1},
        "ageBand": {"40-59": 1, "unknown": 1, "80+": 1},
        "manufacturer": {"Acme": 1, "unknown": 1, "Other": 1},
        "modality": {"CT": 2, "MR": 1},
    }


def test_error_count_accepts_a_count_or_a_list() -> None:
    def report(errors: object) -> types.SimpleNamespace:
        return types.SimpleNamespace(errors=errors)

    assert deidgate.error_count(report(3)) == 3
    assert deidgate.error_count(report(["a", "b"])) == 2
    assert deidgate.error_count(report(("a",))) == 1
    assert deidgate.error_count(report(None)) == 0
    assert deidgate.error_count(types.SimpleNamespace()) == 0


def test_the_deid_packages_verifier_is_used_when_it_offers_one() -> None:
    import lightbox.sandbox.deid as deid

    verifier, name = deidgate.load_verifier()
    assert (verifier, name) == (deid.verify_tree, "deid")


def test_the_minimal_check_stands_in_only_without_a_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = types.ModuleType("lightbox.sandbox.deid")
    monkeypatch.setitem(sys.modules, "lightbox.sandbox.deid", stub)
    monkeypatch.setattr(sys.modules["lightbox.sandbox"], "deid", stub, raising=False)
    assert deidgate.load_verifier() == (minimal_verify_tree, "minimal")


def test_a_verifier_that_fails_to_import_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            raise ImportError("no module named 'highdicom'")

    stub = Broken("lightbox.sandbox.deid")
    monkeypatch.setitem(sys.modules, "lightbox.sandbox.deid", stub)
    monkeypatch.setattr(sys.modules["lightbox.sandbox"], "deid", stub, raising=False)
    with pytest.raises(
        deidgate.VerifierUnavailable,
        match="^the de-identification verifier failed to load: no module named 'highdicom'$",
    ):
        deidgate.load_verifier()


def test_verify_tree_passes_the_options_to_the_verifier(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = []
    monkeypatch.setattr(
        deidgate, "load_verifier", lambda: (lambda root, options: seen.append((root, options)) or "r", "x")
    )
    assert deidgate.verify_tree(str(tmp_path), ("retainUIDs",)) == "r"
    assert seen == [(tmp_path, ["retainUIDs"])]
