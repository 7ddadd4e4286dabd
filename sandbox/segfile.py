"""DICOM SEG masks: the contract's second segmentation format, read as a (slices, rows,
columns) boolean mask aligned with the case's first series.

Each frame of the SEG must name the input image it was derived from (Derivation Image
Sequence > Source Image Sequence > Referenced SOP Instance UID, as highdicom, dcmqi and
most viewers write it); all segments together are the structure, as with ``.npz``.
``write_seg`` makes such a file for the reference segmenter and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# A vendor file is data, not trusted: bound it before decoding.
MAX_SEG_BYTES = 512 << 20
MAX_FRAMES_PER_SLICE = 64


class SegError(ValueError):
    """The file is not a DICOM SEG this case's mask can be read from; says why."""


def _referenced_uids(item: Any) -> list[str]:
    uids = []
    for derivation in item.get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            uid = source.get("ReferencedSOPInstanceUID")
            if uid:
                uids.append(str(uid))
    return uids


def read_seg(path: Path, slice_uids: Sequence[str], shape: tuple[int, int, int]) -> np.ndarray:
    """The mask of one case: ``slice_uids`` are the SOP Instance UIDs of its first series in
    slice order, ``shape`` is (slices, rows, columns)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if path.stat().st_size > MAX_SEG_BYTES:
        raise SegError(f"larger than {MAX_SEG_BYTES >> 20} MiB")
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SegError(f"not readable DICOM ({type(exc).__name__})") from exc
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        raise SegError(f"SOP class {ds.get('SOPClassUID', 'missing')} is not Segmentation Storage")
    slices, rows, columns = shape
    if (ds.get("Rows"), ds.get("Columns")) != (rows, columns):
        raise SegError(f"frames are {ds.get('Rows')}x{ds.get('Columns')}, the series is {rows}x{columns}")
    frames_declared = int(ds.get("NumberOfFrames") or 1)
    if frames_declared > slices * MAX_FRAMES_PER_SLICE:
        raise SegError(f"{frames_declared} frames for {slices} slices")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != frames_declared:
        raise SegError(f"{len(per_frame)} per-frame items for {frames_declared} frames")
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the vendor file's
        raise SegError(f"pixel data cannot be decoded ({type(exc).__name__})") from exc
    frames = pixels.reshape(frames_declared, rows, columns)
    if str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        frames = frames >= float(ds.get("MaximumFractionalValue") or 1) / 2
    index = {uid: i for i, uid in enumerate(slice_uids)}
    mask = np.zeros(shape, dtype=bool)
    for number, (frame, item) in enumerate(zip(frames, per_frame), start=1):
        uids = _referenced_uids(item)
        if not uids:
            raise SegError(f"frame {number} does not name the image it was derived from")
        unknown = [uid for uid in uids if uid not in index]
        if unknown:
            raise SegError(f"frame {number} refers to an image that is not in the case's first series")
        for uid in uids:
            mask[index[uid]] |= frame != 0
    return mask


def write_seg(mask: np.ndarray, sources: Sequence[Any], path: Path, label: str = "structure") -> None:
    """A BINARY SEG with one segment, one frame per source image (``sources``: the series'
    datasets in slice order, headers only)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import pack_bits
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if mask.shape[0] != len(sources):
        raise ValueError("one mask slice per source image")
    first = sources[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SEG_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SEG_SOP_CLASS, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = first.get("FrameOfReferenceUID", generate_uid())
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SEG", 300, 1
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.SegmentationType = "BINARY"
    ds.ContentLabel = "LIGHTBOX"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(mask.shape[1]), int(mask.shape[2])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.NumberOfFrames = int(mask.shape[0])
    segment = Dataset()
    segment.SegmentNumber, segment.SegmentLabel, segment.SegmentAlgorithmType = 1, label, "AUTOMATIC"
    segment.SegmentAlgorithmName = "lightbox reference segmenter"
    for attr, (value, meaning) in {
        "SegmentedPropertyCategoryCodeSequence": ("49755003", "Morphologically abnormal structure"),
        "SegmentedPropertyTypeCodeSequence": ("108369006", "Neoplasm"),
    }.items():
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "SCT", meaning
        setattr(segment, attr, Seq([code]))
    ds.SegmentSequence = Seq([segment])
    items = []
    for source in sources:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
        derivation = Dataset()
        derivation.SourceImageSequence = Seq([ref])
        identification = Dataset()
        identification.ReferencedSegmentNumber = 1
        item = Dataset()
        item.DerivationImageSequence = Seq([derivation])
        item.SegmentIdentificationSequence = Seq([identification])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Seq(items)
    ds.PixelData = pack_bits(np.ascontiguousarray(mask != 0, dtype=np.uint8))
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
