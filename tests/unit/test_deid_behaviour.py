"""Pseudonym consistency, date shifting, options, output layout, odd encodings, malformed input."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path
from typing import get_args

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from lightbox.api.run import DeidOption
from lightbox.sandbox.deid import DicomError, batch, deidentify_file, deidentify_tree, verify_tree
from lightbox.sandbox.deid.attributes import BASIC_CODE, METHOD_CODES
from lightbox.sandbox.deid.profile import OPTIONS, compile_profile, load_table, resolve_action, validate_options
from lightbox.sandbox.deid.pseudonyms import KeyFileError, load_key
from lightbox.sandbox.deid.safe_private import SafePrivateList
from lightbox.sandbox.deid.values import Scrubber, identifying_terms, shift_dates

KEY = b"behaviour-test-key-0123456789abc"
OTHER_KEY = b"another-test-key-0123456789abcde"
UID = re.compile(r"^2\.25\.(0|[1-9]\d*)$")


def ct(**changes: object) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def run(src: Path, dst: Path, options: tuple[str, ...] = (), key: bytes = KEY, **kwargs: object) -> list[Dataset]:
    summary = deidentify_tree(src, dst, key=key, options=options, jobs=1, **kwargs)  # type: ignore[arg-type]
    assert summary.errors == 0, summary.refused
    return [pydicom.dcmread(p) for p in sorted(dst.rglob("*.dcm"))]


@pytest.fixture()
def series(tmp_path: Path) -> Path:
    """Two slices of one study, the second referencing the first; plus another patient."""
    src = tmp_path / "in"
    first = ct(SOPInstanceUID="1.2.3.4.100", InstanceNumber=1, ContentDate="20200315", StudyDate="20200314")
    second = ct(SOPInstanceUID="1.2.3.4.101", InstanceNumber=2, ContentDate="20200320", StudyDate="20200314")
    ref = Dataset()
    ref.ReferencedSOPClassUID = first.SOPClassUID
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([ref])
    other = ct(
        PatientID="OTHER-PATIENT-77",
        PatientName="Other^Person",
        SOPInstanceUID="1.2.3.4.200",
        StudyInstanceUID="1.2.3.4.201",
        StudyDate="20200314",
        InstanceNumber=99,
    )
    write(first, src / "a" / "first.dcm")
    write(second, src / "a" / "second.dcm")
    write(other, src / "b" / "other.dcm")
    return src


def by_instance(datasets: list[Dataset]) -> dict[int, Dataset]:
    return {int(ds.InstanceNumber): ds for ds in datasets}


def test_pseudonyms_consistent_across_files_and_runs(series: Path, tmp_path: Path) -> None:
    one = run(series, tmp_path / "one")
    two = run(series, tmp_path / "two")
    assert [ds.SOPInstanceUID for ds in one] == [ds.SOPInstanceUID for ds in two]
    assert [ds.PatientID for ds in one] == [ds.PatientID for ds in two]
    patients = {ds.PatientID for ds in one}
    assert len(patients) == 2  # two patients stay two, one patient stays one
    original = pydicom.dcmread(series / "a" / "first.dcm")
    for ds in one:
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID):
            assert UID.match(uid) and len(uid) <= 64
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PatientName == ds.PatientID != original.PatientID
        assert ds.PatientIdentityRemoved == "YES"


def test_references_stay_consistent(series: Path, tmp_path: Path) -> None:
    slices = by_instance(run(series, tmp_path / "out"))
    assert slices[2].ReferencedImageSequence[0].ReferencedSOPInstanceUID == slices[1].SOPInstanceUID
    assert slices[1].FrameOfReferenceUID == slices[2].FrameOfReferenceUID
    assert slices[1].StudyInstanceUID == slices[2].StudyInstanceUID


def test_different_key_gives_different_pseudonyms(series: Path, tmp_path: Path) -> None:
    one = run(series, tmp_path / "one")
    other = run(series, tmp_path / "other", key=OTHER_KEY)
    assert not {ds.PatientID for ds in one} & {ds.PatientID for ds in other}
    assert not {ds.SOPInstanceUID for ds in one} & {ds.SOPInstanceUID for ds in other}


def test_modified_dates_shift_per_patient_and_keep_intervals(series: Path, tmp_path: Path) -> None:
    out = run(series, tmp_path / "out", ("retainLongitudinalModifiedDates",))
    slices = by_instance(out)

    def day(text: str) -> date:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))

    shift = day(slices[1].StudyDate) - date(2020, 3, 14)
    assert shift.days < 0
    assert day(slices[1].ContentDate) - day(slices[1].StudyDate) == date(2020, 3, 15) - date(2020, 3, 14)
    assert day(slices[2].ContentDate) - date(2020, 3, 20) == shift
    assert all(ds.LongitudinalTemporalInformationModified == "MODIFIED" for ds in out)
    assert slices[99].PatientID != slices[1].PatientID
    assert slices[99].StudyDate != slices[1].StudyDate  # another patient, another offset


def test_full_dates_kept_and_basic_removes_them(series: Path, tmp_path: Path) -> None:
    full = by_instance(run(series, tmp_path / "full", ("retainLongitudinalFullDates",)))
    assert full[1].StudyDate == "20200314" and full[1].LongitudinalTemporalInformationModified == "UNMODIFIED"
    basic = by_instance(run(series, tmp_path / "basic"))
    assert basic[1].StudyDate == "" and basic[1].ContentDate == "19000101"  # Z and Z/D->D
    assert basic[1].LongitudinalTemporalInformationModified == "REMOVED"


def test_shift_dates_formats() -> None:
    assert shift_dates(b"20200301", "DA", -1) == b"20200229"
    assert shift_dates(b"20200301-20200305", "DA", -1) == b"20200229-20200304"
    assert shift_dates(b"20200301\\20200302", "DA", -1) == b"20200229\\20200301"
    assert shift_dates(b"20200301120000.5+0100", "DT", -1) == b"20200229120000.5+0100"
    assert shift_dates(b"2020", "DT", -400) == b"2018"
    assert shift_dates(b"garbage!", "DA", -1) == b""


def test_method_codes(tmp_path: Path) -> None:
    from pydicom.sr._concepts_dict import concepts

    dcm = {value: entry for per_keyword in concepts["DCM"].values() for value, entry in per_keyword.items()}
    for value, meaning in [BASIC_CODE, *METHOD_CODES.values()]:
        assert dcm[value] == (meaning, [7050])  # CID 7050, De-identification Method
    assert set(METHOD_CODES) == set(OPTIONS)
    src = write(ct(), tmp_path / "in" / "ct.dcm")
    out = run(src.parent, tmp_path / "out", ("retainUIDs", "cleanDescriptors"))[0]
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100", "113110", "113105"]
    assert all(item.CodingSchemeDesignator == "DCM" for item in out.DeidentificationMethodCodeSequence)
    assert "Retain UIDs Option" in out.DeidentificationMethod


def test_options_match_the_api_literal() -> None:
    assert OPTIONS == get_args(DeidOption)
    with pytest.raises(ValueError, match="unknown"):
        validate_options(["retainEverything"])
    with pytest.raises(ValueError, match="exclude"):
        validate_options(["retainLongitudinalFullDates", "retainLongitudinalModifiedDates"])


def test_action_resolution_is_table_driven() -> None:
    rows = {r["name"]: r for r in load_table()}
    basic = compile_profile()
    tag = {
        name: int(r["tag"][1:5] + r["tag"][6:10], 16)
        for name, r in rows.items()
        if "X" not in r["tag"][1:10] and "G" not in r["tag"]
    }
    assert basic.rules[tag["Patient's Name"]].action == "Z"
    assert basic.rules[tag["Referenced Study Sequence"]].action == "Z"  # X/Z
    assert basic.rules[tag["Protocol Name"]].action == "D"  # X/D
    assert basic.rules[tag["Patient ID"]].action == "D"  # Z/D
    assert basic.rules[tag["Institution Name"]].action == "D"  # X/Z/D
    assert basic.rules[tag["Referenced Image Sequence"]].action == "U*"  # X/Z/U*
    assert basic.private_action == "X" and basic.overlay_action == "X" and basic.curve_action == "X"
    chars = compile_profile(["retainPatientCharacteristics"])
    assert chars.rules[tag["Patient's Sex"]].action == "K"
    assert chars.rules[tag["Allergies"]].action == "C"
    # Retain wins over clean whenever both chosen columns speak.
    for row in rows.values():
        chosen = frozenset(OPTIONS) - {"retainLongitudinalFullDates"}
        columns = [
            row.get(c) for c in ("rtnSafePrivOpt", "rtnUIDsOpt", "rtnDevIdOpt", "rtnInstIdOpt", "rtnPatCharsOpt")
        ]
        if "K" in columns:
            assert resolve_action(row, chosen) == "K"


def test_option_behaviour(tmp_path: Path) -> None:
    ds = ct(
        PatientSex="F",
        PatientAge="047Y",
        PatientWeight="61.5",
        StudyDescription="Chest CT for Doe, MRN 123456789",
        PatientName="Doe^Jane",
        InstitutionName="St Elsewhere",
        DeviceSerialNumber="SN-4711",
        StationName="CT01",
    )
    block = ds.private_block(0x0019, "LKSAFE", create=True)
    block.add_new(0x01, "DS", "1.5")
    block.add_new(0x02, "LO", "Doe^Jane")
    src = write(ds, tmp_path / "in" / "ct.dcm").parent
    safe = SafePrivateList(frozenset({("LKSAFE", 0x0019, 0x01)}))

    basic = run(src, tmp_path / "basic", safe_private=safe)[0]
    assert basic.PatientSex == "" and "PatientAge" not in basic and "StudyDescription" not in basic
    assert basic.InstitutionName == "ANONYMIZED" and basic.DeviceSerialNumber == "ANONYMIZED"
    assert not any(e.tag.is_private for e in basic)

    kept = run(
        src,
        tmp_path / "kept",
        (
            "retainPatientCharacteristics",
            "retainInstitutionIdentity",
            "retainDeviceIdentity",
            "retainSafePrivate",
            "cleanDescriptors",
        ),
        safe_private=safe,
    )[0]
    assert (kept.PatientSex, kept.PatientAge, kept.PatientWeight) == ("F", "047Y", 61.5)
    assert (
        kept.InstitutionName == "St Elsewhere" and kept.DeviceSerialNumber == "SN-4711" and kept.StationName == "CT01"
    )
    assert kept.StudyDescription == "Chest CT for *, MRN *"
    private = [e for e in kept if e.tag.is_private]
    assert [e.value for e in private] == ["LKSAFE", "1.5"]  # the safelisted element and its creator only
    assert private[1].tag.element & 0xFF == 0x01 and private[1].tag.element >> 8 == private[0].tag.element

    uids = run(src, tmp_path / "uids", ("retainUIDs",))[0]
    original = pydicom.dcmread(src / "ct.dcm")
    assert uids.SOPInstanceUID == original.SOPInstanceUID == uids.file_meta.MediaStorageSOPInstanceUID


def test_clean_structured_content_and_graphics(tmp_path: Path) -> None:
    ds = ct(PatientName="Doe^Jane")
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "Findings discussed with Jane Doe"
    ds.ContentSequence = Sequence([item])
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60003000, "OW", b"\x01" * 8)
    ds.add_new(0x60004000, "LT", "drawn for Jane Doe")
    src = write(ds, tmp_path / "in" / "ct.dcm").parent
    basic = run(src, tmp_path / "basic")[0]
    assert len(basic.ContentSequence) == 1 and len(basic.ContentSequence[0]) == 0  # D: one empty item
    assert 0x60003000 not in basic and 0x60000010 not in basic
    clean = run(src, tmp_path / "clean", ("cleanStructuredContent", "cleanGraphics"))[0]
    assert clean.ContentSequence[0].TextValue == "Findings discussed with * *"
    assert clean[0x60003000].value == b"\x01" * 8 and clean[0x60004000].value == "drawn for * *"


def test_scrubber() -> None:
    terms = identifying_terms("PN", b"O'Brien^Mary") + identifying_terms("LO", b"MRN-0042")
    s = Scrubber.build(terms)
    assert s.clean(b"Mary OBrien O'Brien mrn-0042 on 2024-01-31, call 555123456") == b"* OBrien O'* *-* on *, call *"
    assert s.clean(b"nothing to see") == b"nothing to see"


def test_pixel_data_streamed_unchanged(tmp_path: Path) -> None:
    names = ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "image_dfl.dcm", "rtplan.dcm", "reportsi.dcm"]
    src = tmp_path / "in"
    for name in names:
        src.mkdir(exist_ok=True)
        shutil.copy(get_testdata_file(name), src / name)
    out = tmp_path / "out"
    summary = deidentify_tree(src, out, key=KEY, jobs=1, allow_burned_in=True)
    assert summary.written == len(names) and summary.ok
    originals = {
        pydicom.dcmread(src / n).SOPClassUID + str(pydicom.dcmread(src / n).get("InstanceNumber")): src / n
        for n in names
    }
    for path in out.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        before = pydicom.dcmread(originals[ds.SOPClassUID + str(ds.get("InstanceNumber"))])
        assert ds.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
        if "PixelData" in before:
            assert ds.PixelData == before.PixelData
    assert verify_tree(out, jobs=1).ok


def test_output_names_carry_no_identifiers(series: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(series, out)
    originals = [pydicom.dcmread(p) for p in series.rglob("*.dcm")]
    secrets = {
        str(v) for ds in originals for v in (ds.PatientID, ds.PatientName, ds.SOPInstanceUID, ds.StudyInstanceUID)
    }
    for path in out.rglob("*"):
        rel = str(path.relative_to(out))
        assert not any(secret in rel for secret in secrets)
        assert re.fullmatch(r"LB[A-Z2-7]{16}(/[0-9a-f]{20}(/[0-9a-f]{20}\.dcm)?)?", rel), rel
    assert not list(out.rglob(".*"))  # no temporary files left behind


def test_burned_in_quarantine(tmp_path: Path) -> None:
    src = tmp_path / "in"
    write(ct(SOPInstanceUID="1.2.3.9.1", BurnedInAnnotation="YES"), src / "burned.dcm")
    write(ct(SOPInstanceUID="1.2.3.9.2", Modality="US"), src / "us.dcm")
    write(ct(SOPInstanceUID="1.2.3.9.3", Modality="US", BurnedInAnnotation="NO"), src / "us_clean.dcm")
    write(ct(SOPInstanceUID="1.2.3.9.4", SOPClassUID="1.2.840.10008.5.1.4.1.1.7"), src / "sc.dcm")
    out = tmp_path / "out"
    summary = deidentify_tree(src, out, key=KEY, jobs=1)
    assert (summary.written, summary.quarantined, summary.ok) == (1, 3, False)
    quarantine = tmp_path / "out-quarantine"
    reasons = sorted(p.read_text() for p in quarantine.rglob("*.reason.txt"))
    assert len(reasons) == 3 and any("BurnedInAnnotation is YES" in r for r in reasons)
    assert len(list(quarantine.rglob("*.dcm"))) == 3 and len(list(out.rglob("*.dcm"))) == 1
    allowed = deidentify_tree(src, tmp_path / "allowed", key=KEY, jobs=1, allow_burned_in=True)
    assert allowed.written == 4 and allowed.ok


def test_malformed_input_is_reported_and_the_batch_continues(tmp_path: Path) -> None:
    src = tmp_path / "in"
    write(ct(), src / "good.dcm")
    (src / "empty.dcm").write_bytes(b"")
    (src / "text.txt").write_text("hello, not an image\n" * 20)
    good = (src / "good.dcm").read_bytes()
    (src / "truncated.dcm").write_bytes(good[: len(good) // 2])
    (src / "header_cut.dcm").write_bytes(good[:700])
    shutil.copy(get_testdata_file("MR_small_bigendian.dcm"), src / "bigendian.dcm")
    summary = deidentify_tree(src, tmp_path / "out", key=KEY, jobs=1)
    assert summary.written == 1 and summary.errors == 5 and not summary.ok
    reasons = dict(summary.refused)
    assert "empty" in reasons[str(src / "empty.dcm")]
    assert "not a DICOM file" in reasons[str(src / "text.txt")]
    assert "truncated" in reasons[str(src / "truncated.dcm")] or "past the end" in reasons[str(src / "truncated.dcm")]
    assert "big endian" in reasons[str(src / "bigendian.dcm")]
    assert len(list((tmp_path / "out").rglob("*"))) == 3  # patient/study/instance of the good file only


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write(ct(), tmp_path / "in" / "ct.dcm")

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch, "write_pieces", broken)
    outcome = deidentify_file(src, tmp_path / "out", key=KEY)
    assert outcome.status == "error" and "No space left" in (outcome.reason or "")
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_parallel_output_equals_serial(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(12):
        write(ct(SOPInstanceUID=f"1.2.3.7.{i}", InstanceNumber=i), src / f"{i}.dcm")
    deidentify_tree(src, tmp_path / "serial", key=KEY, jobs=1)
    deidentify_tree(src, tmp_path / "parallel", key=KEY, jobs=2)
    assert (
        verify_tree(tmp_path / "serial", jobs=1).content_hash == verify_tree(tmp_path / "parallel", jobs=2).content_hash
    )


def test_key_file(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("tiny")
    with pytest.raises(KeyFileError, match="at least"):
        load_key(tmp_path / "short")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key(tmp_path / "missing")
    (tmp_path / "secret").write_text("  0123456789abcdef0123  \n")
    assert load_key(tmp_path / "secret") == b"0123456789abcdef0123"


def test_dicom_error_is_exported() -> None:
    assert issubclass(DicomError, Exception)


def test_attributes_encoded_as_un_are_judged_by_their_real_vr(tmp_path: Path) -> None:
    ds = ct()
    del ds.PatientName
    ds.add_new(0x00100010, "UN", b"Doe^Jane")
    ds.add_new(0x00081030, "UN", b"CT for Jane Doe ")
    ds.add_new(0x00080080, "UN", b"St Elsewhere")
    src = write(ds, tmp_path / "in" / "ct.dcm").parent
    for options in ((), ("cleanDescriptors",)):
        out = tmp_path / ("out" + "".join(options))
        deidentify_tree(src, out, key=KEY, options=options, jobs=1)
        data = next(out.rglob("*.dcm")).read_bytes()
        assert b"Doe" not in data and b"Jane" not in data and b"Elsewhere" not in data
    assert b"CT for * *" in data


def test_large_pixel_data_keeps_its_page_offset(tmp_path: Path) -> None:
    ds = ct(Rows=256, Columns=256)
    ds.PixelData = bytes(range(256)) * 512
    src = write(ds, tmp_path / "in" / "ct.dcm")
    outcome = deidentify_file(src, tmp_path / "out", key=KEY)
    assert outcome.output is not None
    data, original = Path(outcome.output).read_bytes(), src.read_bytes()
    pixels = b"\xe0\x7f\x10\x00"
    assert data.rindex(pixels) % 4096 == original.rindex(pixels) % 4096
    out = pydicom.dcmread(outcome.output)
    assert out.PixelData == ds.PixelData and not any(out.file_meta.PrivateInformation)


def test_sequences_encoded_as_un_are_rewritten_inside(tmp_path: Path) -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.2.3.4.555"
    ref.PatientName = "Doe^Jane"
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, ref)
    raw = body.getvalue()
    items = b"\xfe\xff\x00\xe0" + len(raw).to_bytes(4, "little") + raw
    path = write(ct(PatientName="Doe^Jane"), tmp_path / "in" / "ct.dcm")
    # Referenced Image Sequence with a defined length, encoded as UN, spliced in before PatientName.
    element = b"\x08\x00\x40\x11UN\x00\x00" + len(items).to_bytes(4, "little") + items
    data = path.read_bytes()
    at = data.index(b"\x10\x00\x10\x00PN")
    path.write_bytes(data[:at] + element + data[at:])
    src = path.parent
    out = tmp_path / "out"
    deidentify_tree(src, out, key=KEY, jobs=1)
    path = next(out.rglob("*.dcm"))
    data = path.read_bytes()
    assert b"Doe" not in data and b"1.2.3.4.555" not in data
    seq = pydicom.dcmread(path).ReferencedImageSequence
    assert seq[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert UID.match(seq[0].ReferencedSOPInstanceUID) and seq[0].PatientName.family_name.startswith("LB")
    assert verify_tree(out, jobs=1).ok
    assert not verify_tree(src, jobs=1).ok


def test_verify_accepts_dummies_written_under_un(tmp_path: Path) -> None:
    ds = ct()
    ds.add_new(0x00080023, "UN", b"20200315")  # Content Date (Z/D -> D) encoded as UN
    ds.add_new(0x00181030, "UN", b"Chest protocol of Dr Who ")  # Protocol Name (X/D -> D)
    src = write(ds, tmp_path / "in" / "ct.dcm").parent
    deidentify_tree(src, tmp_path / "out", key=KEY, jobs=1)
    assert verify_tree(tmp_path / "out", jobs=1).ok
    assert {"ContentDate", "ProtocolName"} <= {v.keyword for v in verify_tree(src, jobs=1).violations}


def test_cached_meta_encoding_matches_the_element_encoder() -> None:
    from lightbox.sandbox.deid.attributes import file_meta
    from lightbox.sandbox.deid.dicomio import encode_meta

    for sop_class, sop, ts in [
        ("1.2.840.10008.5.1.4.1.1.2", "2.25.1234", "1.2.840.10008.1.2.1"),
        ("1.2.840.10008.5.1.4.1.1.4", "2.25.12345", "1.2.840.10008.1.2"),
        ("", "1.2.3", "1.2.840.10008.1.2.4.90"),
    ]:
        for padding in (0, 2, 1000, 4054):
            assert batch._fast_meta(sop_class, sop, ts, padding) == encode_meta(file_meta(sop_class, sop, ts, padding))


def test_fast_path_writes_what_the_full_path_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The element walk settles common attributes by a tag lookup; with that switched off
    (every element through the full decision) the output must be byte for byte the same."""
    from lightbox.sandbox.deid import rewrite

    names = ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "image_dfl.dcm", "rtplan.dcm", "reportsi.dcm"]
    src = tmp_path / "in"
    src.mkdir()
    for name in names:
        shutil.copy(get_testdata_file(name), src / name)
    ds = ct(
        SOPInstanceUID="1.2.3.4.77",
        StudyDescription="Chest CT for Doe",
        PatientName="Doe^Jane",
        InstitutionName="St Elsewhere",
    )
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedImageSequence[0].StationName = "CT01"
    write(ds, src / "extra.dcm")
    option_sets = [(), ("cleanDescriptors", "retainUIDs"), ("retainInstitutionIdentity", "cleanStructuredContent")]

    def outputs(out: Path, options: tuple[str, ...]) -> dict[str, bytes]:
        # Two passes over the files with one set of settings, so the caches are warm for the second.
        for _ in range(2):
            summary = deidentify_tree(src, out, key=KEY, options=options, jobs=1, allow_burned_in=True)
            assert summary.ok, summary.refused
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.dcm"))}

    for i, options in enumerate(option_sets):
        fast = outputs(tmp_path / f"fast{i}", options)
        monkeypatch.setattr(rewrite, "_SHORT_B", frozenset())
        full = outputs(tmp_path / f"full{i}", options)
        monkeypatch.undo()
        assert fast.keys() == full.keys() and len(fast) == len(names) + 1
        for name in fast:
            assert fast[name] == full[name], name


def test_parallel_run_reports_what_a_serial_run_reports(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(40):
        write(ct(SOPInstanceUID=f"1.2.3.8.{i}", InstanceNumber=i), src / f"{i:02d}.dcm")
    for i in range(5):
        (src / f"bad{i}.dcm").write_bytes(b"not dicom at all" * i)
    (src / "DICOMDIR").write_bytes(b"skipped")
    serial = deidentify_tree(src, tmp_path / "serial", key=KEY, jobs=1)
    parallel = deidentify_tree(src, tmp_path / "parallel", key=KEY, jobs=3)
    assert (serial.files, serial.written, serial.errors, serial.skipped) == (46, 40, 5, 1)
    assert parallel == serial
    assert (
        verify_tree(tmp_path / "serial", jobs=1).content_hash == verify_tree(tmp_path / "parallel", jobs=1).content_hash
    )
