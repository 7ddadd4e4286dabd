"""DICOM whole-slide images (VL Whole Slide Microscopy Image Storage): the label and overview
instances are removed with their frames, the slide identifiers follow Annex E, and the tiles'
frames are copied as bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from lightbox.sandbox.deid import deidentify_tree, verify_tree
from lightbox.sandbox.deid.cli import main as deid_cli

KEY = b"a-secret-key-for-the-slide-tests"
VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"  # PS3.4 Table B.5-1
NAME, PID, CONTAINER, SPECIMEN, ISSUER = (
    "DOE^JANE^WSI",
    "PID-445566",
    "S12-34567-A1",
    "SPEC-998877",
    "Pathology Lab Oslo",
)
PLANTED = (NAME, PID, CONTAINER, SPECIMEN, ISSUER)
STUDY, SERIES = generate_uid(), generate_uid()


def _jpeg(pixels: np.ndarray) -> bytes:
    """A clean baseline JPEG frame (Pillow's JFIF APP0 only): copied as it is."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _instance(flavour: str, *, encapsulated: bool = False, label_in_image: str = "NO") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = VL_WSI
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if encapsulated else ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = VL_WSI, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", flavour, "NONE"]
    ds.PatientName, ds.PatientID = NAME, PID
    ds.ContainerIdentifier = CONTAINER
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = ISSUER
    ds.IssuerOfTheContainerIdentifierSequence = [issuer]
    specimen = Dataset()
    specimen.SpecimenIdentifier = SPECIMEN
    specimen.SpecimenUID = generate_uid()
    specimen_issuer = Dataset()
    specimen_issuer.LocalNamespaceEntityID = ISSUER
    specimen.IssuerOfTheSpecimenIdentifierSequence = [specimen_issuer]
    specimen.SpecimenPreparationSequence = []
    ds.SpecimenDescriptionSequence = [specimen]
    ds.BurnedInAnnotation = "YES" if flavour == "LABEL" else "NO"
    ds.SpecimenLabelInImage = "YES" if flavour in ("LABEL", "OVERVIEW") else label_in_image
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = 4
    rng = np.random.default_rng(len(flavour))
    if encapsulated:
        frames = [_jpeg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8).tobytes()
    return ds


@pytest.fixture()
def series(tmp_path: Path) -> Path:
    src = tmp_path / "in" / "case"
    src.mkdir(parents=True)
    _instance("VOLUME").save_as(src / "level0.dcm", enforce_file_format=True)
    _instance("VOLUME", encapsulated=True).save_as(src / "level1.dcm", enforce_file_format=True)
    _instance("LABEL").save_as(src / "label.dcm", enforce_file_format=True)
    _instance("OVERVIEW").save_as(src / "overview.dcm", enforce_file_format=True)
    return src


def test_label_and_overview_instances_are_removed_and_counted(series: Path, tmp_path: Path) -> None:
    summary = deidentify_tree(series, tmp_path / "out", key=KEY, jobs=1)
    assert (summary.files, summary.written, summary.errors, summary.quarantined) == (4, 2, 0, 0)
    assert summary.removed == {
        "slide label image (ImageType value 3 LABEL)": 1,
        "slide overview (macro) image (ImageType value 3 OVERVIEW)": 1,
    }
    outputs = sorted(p for p in (tmp_path / "out").rglob("*.dcm"))
    assert len(outputs) == 2
    for out in outputs:
        ds = pydicom.dcmread(out)
        assert ds.ImageType[2] == "VOLUME"
        data = out.read_bytes()
        for planted in PLANTED:
            assert planted.encode() not in data, planted
        # Annex E: ContainerIdentifier and SpecimenIdentifier D (a dummy), issuer sequences Z
        assert ds.ContainerIdentifier and ds.ContainerIdentifier != CONTAINER
        item = ds.SpecimenDescriptionSequence[0]
        assert item.SpecimenIdentifier != SPECIMEN and item.SpecimenUID.startswith("2.25.")
        assert len(item.IssuerOfTheSpecimenIdentifierSequence) == 0
        assert len(ds.IssuerOfTheContainerIdentifierSequence) == 0


def test_frames_are_copied_byte_for_byte(series: Path, tmp_path: Path) -> None:
    deidentify_tree(series, tmp_path / "out", key=KEY, jobs=1)
    sources = {
        pydicom.dcmread(p).file_meta.TransferSyntaxUID: pydicom.dcmread(p).PixelData
        for p in (series / "level0.dcm", series / "level1.dcm")
    }
    outputs = {
        pydicom.dcmread(p).file_meta.TransferSyntaxUID: pydicom.dcmread(p).PixelData
        for p in (tmp_path / "out").rglob("*.dcm")
    }
    assert outputs == sources  # native and encapsulated (JPEG) frames alike


def test_gate_refuses_a_series_with_label_and_overview_naming_them(series: Path, tmp_path: Path) -> None:
    report = verify_tree(series, jobs=1)
    found = {(v.keyword, v.tag): (v.occurrences, v.files) for v in report.violations}
    assert found[("LabelImage", "(0008,0008)")] == (1, 1)
    assert found[("OverviewImage", "(0008,0008)")] == (1, 1)
    assert found[("ContainerIdentifier", "(0040,0512)")] == (4, 4)
    assert found[("PatientName", "(0010,0010)")] == (4, 4)
    text = report.model_dump_json()
    assert not [p for p in PLANTED if p in text]
    deidentify_tree(series, tmp_path / "out", key=KEY, jobs=1)
    clean = verify_tree(tmp_path / "out", jobs=1)
    assert clean.ok, clean.violations


def test_a_volume_that_shows_the_specimen_label_is_removed(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _instance("VOLUME", label_in_image="YES").save_as(src / "v.dcm", enforce_file_format=True)
    report = verify_tree(src, jobs=1)
    assert ("SpecimenLabelInImage", "(0048,0010)") in {(v.keyword, v.tag) for v in report.violations}
    summary = deidentify_tree(src, tmp_path / "out", key=KEY, jobs=1)
    assert summary.written == 0 and summary.removed == {
        "the pixels show the specimen label (SpecimenLabelInImage YES)": 1
    }


def test_the_label_rule_reaches_past_a_long_header(tmp_path: Path) -> None:
    """SpecimenLabelInImage after a header longer than the 32 KiB first read is still found."""
    ds = _instance("VOLUME", label_in_image="YES")
    ds.SpecimenDescriptionSequence[0].SpecimenShortDescription = "x" * 60
    ds.SpecimenDescriptionSequence[0].SpecimenDetailedDescription = "y" * 40000
    src = tmp_path / "in"
    src.mkdir()
    ds.save_as(src / "v.dcm", enforce_file_format=True)
    summary = deidentify_tree(src, tmp_path / "out", key=KEY, jobs=1)
    assert summary.written == 0 and sum(summary.removed.values()) == 1


def test_cli_names_the_removed_images_by_count(
    series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key"
    key.write_bytes(KEY)
    assert deid_cli([str(series), str(tmp_path / "out"), "--key-file", str(key), "-j", "1"]) == 0
    err = capsys.readouterr().err
    assert "removed 1 slide label image (ImageType value 3 LABEL)(s)" in err
    assert "2 written" in err and "2 removed" in err


def test_forked_workers_report_what_a_serial_run_reports(series: Path, tmp_path: Path) -> None:
    """Removed-part counts travel back from worker processes (enough files for the forked path)."""
    import shutil

    import slide_builders as sb

    for i in range(3):
        shutil.copytree(series, series.parent / f"copy{i}")
        sb.write_generic(series.parent / f"copy{i}" / "slide.tif")
    serial = deidentify_tree(series.parent, tmp_path / "serial", key=KEY, jobs=1)
    forked = deidentify_tree(series.parent, tmp_path / "forked", key=KEY, jobs=2)
    assert serial.files == forked.files == 4 + 3 * 5  # the series and three copies, each with a slide
    assert forked.written == 4 * 2 + 3  # two volumes per series, the three slides
    assert (forked.written, forked.errors, forked.removed) == (serial.written, serial.errors, serial.removed)
    assert forked.removed == {
        "slide label image (ImageType value 3 LABEL)": 4,
        "slide overview (macro) image (ImageType value 3 OVERVIEW)": 4,
        "slide label page": 3,
    }


@pytest.mark.parametrize("image_type", [None, ["ORIGINAL", "PRIMARY"]])
def test_a_wsi_instance_without_image_type_value_3_is_removed(tmp_path: Path, image_type) -> None:
    """ImageType is Type 1 in the WSI module; without value 3 a label cannot be told from a level."""
    ds = _instance("VOLUME")
    if image_type is None:
        del ds.ImageType
    else:
        ds.ImageType = image_type
    src = tmp_path / "in"
    src.mkdir()
    ds.save_as(src / "v.dcm", enforce_file_format=True)
    assert ("ImageType", "(0008,0008)") in {(v.keyword, v.tag) for v in verify_tree(src, jobs=1).violations}
    summary = deidentify_tree(src, tmp_path / "out", key=KEY, jobs=1)
    assert summary.written == 0 and list(summary.removed) == [
        "whole-slide image without ImageType value 3 (a label cannot be told from a level)"
    ]
