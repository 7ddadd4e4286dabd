"""The stager's PHI gate (mutmut survivors): which verifier it loads, that it fails closed, and that
the gate it loads finds each identifying attribute planted in otherwise clean sample data.

The gate once fell back to a smaller check of its own when the deid package offered no verifier.
The package exports one (its ``__all__`` says so), so that branch could not be taken; it is gone,
and a package without a verifier is now refused like a broken one. Tags are DICOM's (PS3.6),
written out by hand.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from lightbox.sandbox import deidgate
from lightbox.sandbox.deid.verify import VerificationReport
from lightbox.sandbox.sampledata import make_sample_dataset


def test_the_deid_packages_verifier_is_the_one_loaded() -> None:
    import lightbox.sandbox.deid as deid
    from lightbox.sandbox.deid import verify

    assert "verify_tree" in deid.__all__  # why the old fallback branch was unreachable
    assert deidgate.load_verifier() == (verify.verify_tree, "deid")


def _without_package_verifier(monkeypatch: pytest.MonkeyPatch, stub: types.ModuleType) -> None:
    monkeypatch.setitem(sys.modules, "lightbox.sandbox.deid", stub)
    monkeypatch.setattr(sys.modules["lightbox.sandbox"], "deid", stub, raising=False)


def test_a_deid_package_without_a_verifier_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_package_verifier(monkeypatch, types.ModuleType("lightbox.sandbox.deid"))
    with pytest.raises(deidgate.VerifierUnavailable, match="^the de-identification verifier failed to load: "):
        deidgate.load_verifier()


def test_a_verifier_that_fails_to_import_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            raise ImportError("no module named 'highdicom'")

    _without_package_verifier(monkeypatch, Broken("lightbox.sandbox.deid"))
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


def test_error_count_is_the_reports_count() -> None:
    report = VerificationReport(ok=False, files=5, errors=3, content_hash="x")
    assert deidgate.error_count(report) == 3


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    made = make_sample_dataset(tmp_path_factory.mktemp("sample") / "data", n_cases=3)
    return made.studies_dir, list(made.deid_options)


def _planted(sample: tuple[Path, list[str]], tmp_path: Path, files: int, **values: object) -> Path:
    """A copy of the sample whose first ``files`` DICOM files carry ``values``."""
    studies, _ = sample
    copy = tmp_path / "studies"
    paths = sorted(p for p in studies.rglob("*") if p.is_file())
    for index, path in enumerate(paths):
        target = copy / path.relative_to(studies)
        target.parent.mkdir(parents=True, exist_ok=True)
        if index < files:
            ds = pydicom.dcmread(path)
            for keyword, value in values.items():
                setattr(ds, keyword, value)
            ds.save_as(target)
        else:
            target.write_bytes(path.read_bytes())
    return copy


def test_the_clean_sample_passes_the_gate(sample: tuple[Path, list[str]]) -> None:
    studies, options = sample
    report = deidgate.verify_tree(studies, options)
    assert (report.ok, report.violations, deidgate.error_count(report)) == (True, [], 0)


@pytest.mark.parametrize(
    ("keyword", "value", "tag"),
    [
        ("PatientName", "Doe^Jane", "(0010,0010)"),
        ("PatientBirthDate", "19700101", "(0010,0030)"),
        ("OtherPatientIDs", "X1", "(0010,1000)"),
        ("PatientAddress", "1 Main St", "(0010,1040)"),
        ("PatientTelephoneNumbers", "555", "(0010,2154)"),
        ("ReferringPhysicianName", "Who^Dr", "(0008,0090)"),
        ("AccessionNumber", "A123", "(0008,0050)"),
    ],
)
def test_each_identifying_attribute_is_found_and_named(
    sample: tuple[Path, list[str]], tmp_path: Path, keyword: str, value: str, tag: str
) -> None:
    studies = _planted(sample, tmp_path, 2, **{keyword: value})
    report = deidgate.verify_tree(studies, sample[1])
    assert report.ok is False
    found = {(v.keyword, v.tag, v.files) for v in report.violations}
    assert (keyword, tag, 2) in found


def test_other_patient_ids_sequence_is_found(sample: tuple[Path, list[str]], tmp_path: Path) -> None:
    item = Dataset()
    item.PatientID = "OLD-1"
    studies = _planted(sample, tmp_path, 1, OtherPatientIDsSequence=[item])
    report = deidgate.verify_tree(studies, sample[1])
    assert report.ok is False
    assert ("OtherPatientIDsSequence", "(0010,1002)", 1) in {(v.keyword, v.tag, v.files) for v in report.violations}


def test_institution_may_stay_only_with_its_option(sample: tuple[Path, list[str]], tmp_path: Path) -> None:
    studies = _planted(sample, tmp_path, 1, InstitutionName="General Hospital")
    with_option = deidgate.verify_tree(studies, ["retainInstitutionIdentity", "retainPatientCharacteristics"])
    without = deidgate.verify_tree(studies, ["retainPatientCharacteristics"])
    assert with_option.ok
    assert ("InstitutionName", "(0008,0080)") in {(v.keyword, v.tag) for v in without.violations}


@pytest.mark.parametrize("flag", ["NO", "maybe"])
def test_identity_removed_must_say_yes(sample: tuple[Path, list[str]], tmp_path: Path, flag: str) -> None:
    studies = _planted(sample, tmp_path, 1, PatientIdentityRemoved=flag)
    assert deidgate.verify_tree(studies, sample[1]).ok is False


def test_unreadable_files_are_errors_not_passes(sample: tuple[Path, list[str]], tmp_path: Path) -> None:
    studies = _planted(sample, tmp_path, 0)
    (studies / "notes.txt").write_text("not DICOM")
    report = deidgate.verify_tree(studies, sample[1])
    assert report.ok is False and deidgate.error_count(report) == 1
