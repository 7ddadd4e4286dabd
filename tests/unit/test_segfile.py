"""DICOM SEG masks: written by the reference segmenter, read by the scorer and vendor check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from lightbox.sandbox.sampledata import make_sample_dataset
from lightbox.sandbox.segfile import SegError, read_seg, write_seg


@pytest.fixture
def series(tmp_path: Path) -> list[pydicom.Dataset]:
    sample = make_sample_dataset(tmp_path / "data", n_cases=1, seed=2, task="segmentation")
    files = sorted((sample.studies_dir / sample.cases[0]).rglob("*.dcm"))
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def _mask(series: list[pydicom.Dataset]) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((len(series), series[0].Rows, series[0].Columns)) > 0.7


def test_a_written_seg_reads_back_as_the_same_mask(series, tmp_path: Path) -> None:
    mask = _mask(series)
    write_seg(mask, series, tmp_path / "m.dcm")
    uids = [str(s.SOPInstanceUID) for s in series]
    back = read_seg(tmp_path / "m.dcm", uids, mask.shape)
    assert back.dtype == bool and np.array_equal(back, mask)
    # Frames are placed by the image they name, not by their order in the file.
    assert np.array_equal(read_seg(tmp_path / "m.dcm", uids[::-1], mask.shape), mask[::-1])


def test_fractional_frames_count_from_half_the_maximum(series, tmp_path: Path) -> None:
    mask = _mask(series)
    write_seg(mask, series, tmp_path / "m.dcm")
    ds = pydicom.dcmread(tmp_path / "m.dcm")
    ds.SegmentationType, ds.MaximumFractionalValue = "FRACTIONAL", 200
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.where(mask, 150, 60).astype(np.uint8).tobytes()
    ds.save_as(tmp_path / "f.dcm")
    assert np.array_equal(read_seg(tmp_path / "f.dcm", [str(s.SOPInstanceUID) for s in series], mask.shape), mask)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"), "is not Segmentation Storage"),
        (lambda ds: setattr(ds, "Columns", ds.Columns + 1), "the series is"),
        (
            lambda ds: (
                ds.PerFrameFunctionalGroupsSequence[0]
                .DerivationImageSequence[0]
                .SourceImageSequence[0]
                .__setattr__("ReferencedSOPInstanceUID", "1.2.3.4")
            ),
            "not in the case's first series",
        ),
        (
            lambda ds: delattr(ds.PerFrameFunctionalGroupsSequence[1], "DerivationImageSequence"),
            "does not name the image",
        ),
        (lambda ds: setattr(ds, "NumberOfFrames", 1), "per-frame items"),
    ],
)
def test_a_seg_that_does_not_fit_the_case_is_refused_with_the_reason(series, tmp_path: Path, change, message) -> None:
    mask = _mask(series)
    write_seg(mask, series, tmp_path / "m.dcm")
    ds = pydicom.dcmread(tmp_path / "m.dcm")
    change(ds)
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(SegError, match=message):
        read_seg(tmp_path / "bad.dcm", [str(s.SOPInstanceUID) for s in series], mask.shape)


def test_not_dicom_at_all(tmp_path: Path) -> None:
    (tmp_path / "x.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(SegError, match="not readable DICOM"):
        read_seg(tmp_path / "x.dcm", ["1"], (1, 2, 2))


def test_pixel_values_that_spell_the_pixel_data_tag_are_just_values(series, tmp_path: Path) -> None:
    # a soft edge 224, 127, 16, 0 in a FRACTIONAL frame is the byte string of tag (7FE0,0010)
    mask = _mask(series)
    write_seg(mask, series, tmp_path / "m.dcm")
    ds = pydicom.dcmread(tmp_path / "m.dcm")
    ds.SegmentationType, ds.MaximumFractionalValue = "FRACTIONAL", 255
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    values = np.where(mask, 200, 0).astype(np.uint8)
    values[-1, -1, -4:] = [224, 127, 16, 0]
    ds.PixelData = values.tobytes()
    ds.save_as(tmp_path / "f.dcm")
    assert b"\xe0\x7f\x10\x00" in (tmp_path / "f.dcm").read_bytes()[-8:]
    assert np.array_equal(
        read_seg(tmp_path / "f.dcm", [str(s.SOPInstanceUID) for s in series], mask.shape), values >= 127.5
    )
