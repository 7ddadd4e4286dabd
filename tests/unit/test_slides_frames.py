"""Metadata inside the JPEG frames of encapsulated DICOM slides and photographs: removed frame by
frame without decoding, the pixels decoding the same (Pillow as the reference), the fragments and
offset table rebuilt so pydicom reads the frames back; what cannot be walked is refused."""

from __future__ import annotations

import io
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, generate_uid

from lightbox.sandbox.deid import deidentify_tree, verify_tree
from lightbox.sandbox.deid.batch import FRAME_SEGMENTS

KEY = b"a-secret-key-for-the-frame-tests"
VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
CT = "1.2.840.10008.5.1.4.1.1.2"
ARTIST, WHEN, COMMENT_PID, DEVICE = "DOE^JANE^EXIF", "2024:03:05 14:15:16", "PID-5544-COM", "SN-CAM-90817"
PLANTED = (ARTIST, WHEN, COMMENT_PID, DEVICE)


def _pixels(seed: int, shape: tuple[int, int] = (32, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (*shape, 3), dtype=np.uint8)


def _jpeg(seed: int, planted: bool) -> bytes:
    """A baseline JPEG written by Pillow; ``planted``: an EXIF APP1 with a date, a name and a
    serial number, and a COM segment with a patient id."""
    out = io.BytesIO()
    image = Image.fromarray(_pixels(seed))
    if planted:
        exif = Image.Exif()
        exif[0x013B] = ARTIST  # Artist
        exif[0x0132] = WHEN  # DateTime
        exif[0xA431] = DEVICE  # BodySerialNumber
        image.save(out, "JPEG", quality=90, exif=exif.tobytes(), comment=COMMENT_PID)
    else:
        image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _odd(frame: bytes) -> bytes:
    """The same stream one byte longer (a fill byte before EOI, T.81 B.1.1.2): odd length, so
    the encapsulation pads it with a NUL."""
    assert frame.endswith(b"\xff\xd9")
    result = frame if len(frame) % 2 else frame[:-2] + b"\xff\xff\xd9"
    assert len(result) % 2
    return result


def _instance(
    frames: list[bytes],
    *,
    sop_class: str = VL_WSI,
    modality: str = "SM",
    syntax: str = JPEGBaseline8Bit,
    bot: bool = True,
    fragments_per_frame: int = 1,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PatientName, ds.PatientID = "X^Y", "P1"
    ds.BurnedInAnnotation = "NO"
    ds.SpecimenLabelInImage = "NO"
    ds.Rows, ds.Columns = 32, 48
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames, fragments_per_frame=fragments_per_frame, has_bot=bot)
    ds["PixelData"].VR = "OB"
    return ds


def _save(ds: Dataset, folder: Path, name: str = "f.dcm") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _frames_out(out: Path) -> tuple[list[bytes], Dataset]:
    [path] = list(out.rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))), ds


def _decoded(frame: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(frame)))


def test_exif_and_comment_leave_every_frame_and_the_pixels_decode_the_same(tmp_path: Path) -> None:
    frames = [_jpeg(1, True), _odd(_jpeg(2, True)), _jpeg(3, False)]
    assert all(p.encode() in frames[0] for p in PLANTED)  # the planting worked (Pillow wrote them)
    _save(_instance(frames), tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert (summary.written, summary.errors) == (1, 0)
    assert summary.removed == {FRAME_SEGMENTS: 4}  # APP1 and COM of two frames (hand count)
    [path] = list((tmp_path / "out").rglob("*.dcm"))
    data = path.read_bytes()
    for planted in PLANTED:
        assert planted.encode() not in data, planted
    assert b"Exif" not in data
    written, ds = _frames_out(tmp_path / "out")
    assert len(written) == 3
    for source, frame in zip(frames, written, strict=True):
        assert b"\xff\xfe" not in frame.split(b"\xff\xda")[0]  # no COM before the scan
        assert np.array_equal(_decoded(frame), _decoded(source))
    assert written[2].rstrip(b"\0") == frames[2]  # a clean frame is copied as it was
    # the rebuilt Basic Offset Table points at each frame's item (pydicom reads by it)
    offsets = list(generate_frames(ds.PixelData, number_of_frames=3))
    assert offsets == written


def test_the_gate_counts_frames_with_metadata_and_passes_the_output(tmp_path: Path) -> None:
    _save(_instance([_jpeg(1, True), _jpeg(2, False), _jpeg(3, True)]), tmp_path / "in" / "case")
    report = verify_tree(tmp_path / "in", jobs=1)
    found = {(v.keyword, v.tag): v.occurrences for v in report.violations}
    assert found[("FrameMetadata", "(7FE0,0010)")] == 2
    assert not [p for p in PLANTED if p in report.model_dump_json()]
    deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    clean = verify_tree(tmp_path / "out", jobs=1)
    assert clean.ok, clean.violations


def test_a_frame_split_over_fragments_comes_out_whole(tmp_path: Path) -> None:
    frames = [_jpeg(4, True), _jpeg(5, True)]
    _save(_instance(frames, fragments_per_frame=3), tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert (summary.written, summary.removed) == (1, {FRAME_SEGMENTS: 4})
    written, ds = _frames_out(tmp_path / "out")
    assert len(written) == 2
    assert np.array_equal(_decoded(written[1]), _decoded(frames[1]))
    assert COMMENT_PID.encode() not in b"".join(written)


def test_no_offset_table_one_fragment_per_frame(tmp_path: Path) -> None:
    frames = [_jpeg(6, True), _jpeg(7, False)]
    _save(_instance(frames, bot=False), tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert summary.removed == {FRAME_SEGMENTS: 2}
    written, _ = _frames_out(tmp_path / "out")
    assert [np.array_equal(_decoded(w), _decoded(f)) for w, f in zip(written, frames, strict=True)] == [True, True]


@pytest.mark.parametrize(
    "broken, why",
    [
        (lambda f: f[:2] + b"\x00\x00" + f[2:], "frame 2 of 3: it has a byte that is not a marker"),
        (lambda f: f[:-2], "frame 2 of 3: it"),  # no end-of-image marker
        (lambda f: b"GIF89a" + f, "frame 2 of 3: it does not start with a start-of-image marker"),
    ],
)
def test_a_frame_that_cannot_be_walked_refuses_the_instance_naming_it(tmp_path: Path, broken, why: str) -> None:
    frames = [_jpeg(1, True), broken(_jpeg(2, False)), _jpeg(3, False)]
    _save(_instance(frames), tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert (summary.written, summary.errors) == (0, 1)
    assert why in summary.refused[0][1]
    assert not list((tmp_path / "out").rglob("*.dcm"))
    report = verify_tree(tmp_path / "in", jobs=1)
    assert ("FrameStructure", "(7FE0,0010)") in {(v.keyword, v.tag) for v in report.violations}


def test_fragments_that_cannot_be_assigned_to_frames_are_refused(tmp_path: Path) -> None:
    ds = _instance([_jpeg(1, True), _jpeg(2, True)], bot=False, fragments_per_frame=2)
    _save(ds, tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert summary.errors == 1
    assert "4 fragments for 2 frames without an offset table" in summary.refused[0][1]


def test_an_extended_offset_table_with_metadata_is_refused(tmp_path: Path) -> None:
    frames = [_jpeg(1, True), _jpeg(2, False)]
    ds = _instance(frames)
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    _save(ds, tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert summary.errors == 1 and "Extended Offset Table" in summary.refused[0][1]


def test_clean_frames_with_an_extended_offset_table_are_copied(tmp_path: Path) -> None:
    frames = [_jpeg(1, False), _jpeg(2, False)]
    ds = _instance(frames)
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    _save(ds, tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert (summary.written, summary.errors, summary.removed) == (1, 0, {})


def test_a_jpeg_2000_comment_leaves_the_frame(tmp_path: Path) -> None:
    frame = imagecodecs.jpeg2k_encode(_pixels(8), level=0, codecformat="J2K")
    assert b"Created by OpenJPEG" in frame  # the encoder's own main-header comment
    ds = _instance([frame], syntax=JPEG2000Lossless)
    ds.PhotometricInterpretation = "RGB"
    _save(ds, tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert summary.removed == {FRAME_SEGMENTS: 1}
    [written], _ = _frames_out(tmp_path / "out")
    assert b"OpenJPEG" not in written
    assert np.array_equal(imagecodecs.jpeg2k_decode(written), _pixels(8))


def test_a_photograph_class_is_scrubbed_and_a_ct_is_not_touched(tmp_path: Path) -> None:
    """VL Photographic Image (77.1.4) frames come from cameras: scrubbed. A CT's JPEG frames
    are outside this rule (its encoders write no EXIF) and are copied as they are."""
    photo = _instance([_jpeg(1, True)], sop_class="1.2.840.10008.5.1.4.1.1.77.1.4", modality="XC")
    _save(photo, tmp_path / "photo" / "case")
    assert deidentify_tree(tmp_path / "photo", tmp_path / "po", key=KEY, jobs=1).removed == {FRAME_SEGMENTS: 2}
    ct = _instance([_jpeg(1, True)], sop_class=CT, modality="CT")
    del ct.ImageType, ct.SpecimenLabelInImage
    _save(ct, tmp_path / "ct" / "case")
    assert deidentify_tree(tmp_path / "ct", tmp_path / "co", key=KEY, jobs=1).removed == {}


def test_a_compression_whose_headers_cannot_be_read_is_refused(tmp_path: Path) -> None:
    ds = _instance([b"\0\0\0\x01" + bytes(30)], syntax="1.2.840.10008.1.2.4.107")  # HEVC Main
    _save(ds, tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert summary.errors == 1
    assert "transfer syntax 1.2.840.10008.1.2.4.107" in summary.refused[0][1]


def test_native_frames_are_not_walked(tmp_path: Path) -> None:
    ds = _instance([_jpeg(1, False)])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PhotometricInterpretation = "RGB"
    ds.NumberOfFrames = 1
    ds.PixelData = _pixels(1).tobytes()
    _save(ds, tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert (summary.written, summary.removed) == (1, {})


def test_a_frame_over_the_memory_bound_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightbox.sandbox.deid.slide_frames as frames_module

    frame = _jpeg(1, True)
    monkeypatch.setattr(frames_module, "MAX_FRAME_BYTES", len(frame) - 1)
    _save(_instance([frame]), tmp_path / "in" / "case")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert summary.errors == 1 and "frame 1 of 1: larger than" in summary.refused[0][1]
