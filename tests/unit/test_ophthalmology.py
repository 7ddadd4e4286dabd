"""Ophthalmology (issue 13.3): OP (8- and 16-bit) and OPT through the Annex E path; fundus
photos through the photo path.

Expected actions are read from PS3.15 Table E.1-1 (2024b) by hand, not from the profile code:
Device Serial Number (0018,1000) X/Z/D, Station Name (0008,1010) X/Z/D, Device UID
(0018,1002) U, Camera Owner Name (0016,004D) X, Lens Serial Number (0016,0051) X (K with
the Retain Device Identity option), Unique Device Identifier (0018,1009) X, Detector ID
(0018,700A) X/D, Acquisition DateTime (0008,002A) X/Z/D. Laterality (0020,0060) and Image
Laterality (0020,0062) are not in the table: they stay, and so do the ophthalmic
acquisition parameters of group 0022 (field of view, pupil dilation, axial length).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import photo_samples as ps
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from lightbox.api.run import StagerConfig
from lightbox.sandbox.deid import deidentify_tree, verify_tree
from lightbox.sandbox.deid.photos_tree import deidentify_photo_tree
from lightbox.sandbox.stager import stage

KEY = b"ophthalmology-test-key-012345678"
OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
OP_16BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.2"
OPT = "1.2.840.10008.5.1.4.1.1.77.1.5.4"

PLANTED = {
    "DeviceSerialNumber": "OPH-SERIAL-31337",
    "StationName": "FUNDUS-ROOM-3",
    "CameraOwnerName": "Owner Planted",
    "LensSerialNumber": "LENS-9931",
    "UniqueDeviceIdentifier": "(01)00643169007222(21)UDI-PLANTED",
    "DetectorID": "DET-PLANTED-7",
    "PatientName": "Planted^Patient",
    "PatientID": "MRN-OPH-4242",
    "InstitutionName": "Planted Eye Clinic",
    "AcquisitionDateTime": "20230405060708",
}


def ophthalmic(sop_class: str, modality: str, frames: int, bits: int, samples: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.DeviceUID = generate_uid()
    ds.Modality = modality
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.Manufacturer = "Topcon"
    ds.Laterality = "R"
    ds.ImageLaterality = "R"
    ds.HorizontalFieldOfView = 45
    ds.PupilDilated = "YES"
    ds.AxialLengthOfTheEye = 23.5
    ds.BurnedInAnnotation = "NO"
    ds.Rows, ds.Columns = 32, 48
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    rng = np.random.default_rng(bits + frames)
    shape = (frames, 32, 48, samples) if samples == 3 else (frames, 32, 48)
    pixels = rng.integers(0, 2**bits, shape, dtype=np.uint8 if bits == 8 else np.uint16)
    ds.PixelData = pixels.tobytes()
    return ds


CASES = {
    "op-8bit": (OP_8BIT, "OP", 1, 8, 3),
    "op-16bit": (OP_16BIT, "OP", 1, 16, 1),
    "opt": (OPT, "OPT", 5, 16, 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_ophthalmic_dicom_keeps_laterality_and_loses_the_device_serial(name: str, tmp_path: Path) -> None:
    source = ophthalmic(*CASES[name])
    src = tmp_path / "src" / "case" / "image.dcm"
    src.parent.mkdir(parents=True)
    source.save_as(src, enforce_file_format=True)
    before = verify_tree(tmp_path / "src")
    named = {v.keyword for v in before.violations}
    assert {"DeviceSerialNumber", "StationName", "CameraOwnerName", "LensSerialNumber", "DetectorID"} <= named

    summary = deidentify_tree(tmp_path / "src", tmp_path / "out", key=KEY, jobs=1)
    assert (summary.written, summary.errors, summary.quarantined) == (1, 0, 0), summary.refused
    [out_path] = list((tmp_path / "out").rglob("*.dcm"))
    out = pydicom.dcmread(out_path)
    data = out_path.read_bytes()

    assert (out.Laterality, out.ImageLaterality) == ("R", "R")
    assert (out.HorizontalFieldOfView, out.PupilDilated, out.AxialLengthOfTheEye) == (45, "YES", 23.5)
    assert out.Modality == CASES[name][1]
    for keyword, value in PLANTED.items():
        assert value.encode() not in data, keyword
    # X/Z/D: this tool takes D (docs/deid.md), a dummy; X attributes are absent.
    assert out.get("DeviceSerialNumber") in (None, "", "ANONYMIZED")
    assert all(k not in out for k in ("CameraOwnerName", "LensSerialNumber", "UniqueDeviceIdentifier"))
    assert str(out.DeviceUID).startswith("2.25.") and out.DeviceUID != source.DeviceUID
    assert out.PixelData == source.PixelData  # OPT frames and 16-bit samples byte for byte
    assert verify_tree(tmp_path / "out").ok


def test_retain_device_identity_keeps_the_serials(tmp_path: Path) -> None:
    src = tmp_path / "src" / "case" / "image.dcm"
    src.parent.mkdir(parents=True)
    ophthalmic(*CASES["opt"]).save_as(src, enforce_file_format=True)
    deidentify_tree(tmp_path / "src", tmp_path / "out", key=KEY, jobs=1, options=["retainDeviceIdentity"])
    out = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    assert out.DeviceSerialNumber == PLANTED["DeviceSerialNumber"]
    assert out.LensSerialNumber == PLANTED["LensSerialNumber"]
    assert out.get("CameraOwnerName") is None  # X in every option column: an owner is a person


def test_a_fundus_photo_goes_the_photo_path_as_op_with_its_laterality(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for case, side in (("patient-a-right-eye", "R"), ("patient-a-left-eye", "L")):
        (raw / case).mkdir(parents=True)
        (raw / case / "fundus.jpg").write_bytes(ps.planted_jpeg(seed=len(side) + ord(side)))
    (raw / "cohort.csv").write_text(
        "case,patient,modality,bodySite,laterality\n"
        "patient-a-right-eye,MRN-A,OP,eye,R\n"
        "patient-a-left-eye,MRN-A,OP,eye,L\n"
    )
    dst = tmp_path / "deid"
    summary = deidentify_photo_tree(raw, dst, key=KEY, jobs=1)
    assert summary.errors == 0, summary.refused
    stage(dst, tmp_path / "input", tmp_path / "work", StagerConfig(task="classification", format="photo"))
    manifest = json.loads((tmp_path / "input" / "manifest.json").read_text())
    assert {s["modality"] for c in manifest["cases"] for s in c["series"]} == {"OP"}
    cases = json.loads((tmp_path / "work" / "cases.json").read_text())["cases"]
    assert sorted(c["laterality"] for c in cases.values()) == ["L", "R"]
    assert len({c["patientId"] for c in cases.values()}) == 1  # both eyes, one patient: clustered
    assert {c["bodySite"] for c in cases.values()} == {"eye"}


def test_the_table_says_what_this_file_expects() -> None:
    """The actions stated at the top of this file, against Table E.1-1 as shipped (DICOM 2024b):
    if a new edition changes them, this fails first and the expectations above get reviewed."""
    from importlib.resources import files

    table = json.loads((files("lightbox.sandbox.deid") / "confidentiality_profile_attributes.json").read_text())
    basic = {row["tag"]: row["basicProfile"] for row in table}
    assert {tag: basic.get(tag) for tag in ("(0018,1000)", "(0008,1010)", "(0018,1002)", "(0016,004D)", "(0016,0051)",
                                            "(0018,1009)", "(0018,700A)", "(0008,002A)")} == {
        "(0018,1000)": "X/Z/D", "(0008,1010)": "X/Z/D", "(0018,1002)": "U", "(0016,004D)": "X", "(0016,0051)": "X",
        "(0018,1009)": "X", "(0018,700A)": "X/D", "(0008,002A)": "X/Z/D",
    }
    # Laterality, Image Laterality and the ophthalmic acquisition group are not in the table: kept.
    assert not {t for t in basic if t in ("(0020,0060)", "(0020,0062)") or t.startswith("(0022,")}
