"""DICOM SEG masks: the contract's second segmentation format, read as a (slices, rows,
columns) boolean mask aligned with the case's first series.

Each frame of the SEG must name the input image it was derived from (Derivation Image
Sequence > Source Image Sequence > Referenced SOP Instance UID, as highdicom, dcmqi and
most viewers write it); all segments together are the structure, as with ``.npz``.
``write_seg`` makes such a file for the reference segmenter and tests.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightbox.sandbox.safeio import HostileOutput, Unreadable, read_regular

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# A vendor file is data, not trusted: everything below is bounded before it is parsed or decoded.
MAX_SEG_BYTES = 512 << 20
MAX_FRAMES_PER_SLICE = 64
MAX_SEG_PIXELS = 1 << 28  # decoded pixels over all frames (one byte each once unpacked)
# pydicom turns a few bytes of header into a few hundred bytes of objects: bound the header part
# (everything before Pixel Data) by what per-frame functional groups need, about 1 KiB a frame.
META_BYTES_PER_FRAME = 1024
MAX_META_BYTES = 8 << 20
TRAILING_BYTES = 1024  # after Pixel Data only dataset trailing padding may follow
_PIXEL_DATA = 0x7FE00010
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_NATIVE = {"1.2.840.10008.1.2": True, "1.2.840.10008.1.2.1": False}  # uid -> implicit VR
_WHAT = "a DICOM SEG mask"


class SegError(Unreadable):
    """The file is not a DICOM SEG this case's mask can be read from; says why (naming the rule,
    never a value from the file)."""


@dataclass(frozen=True)
class SegLimits:
    frames: int
    pixels: int
    meta_bytes: int

    @property
    def file_bytes(self) -> int:
        return min(MAX_SEG_BYTES, self.meta_bytes + self.pixels + TRAILING_BYTES)


def seg_limits(shape: tuple[int, int, int]) -> SegLimits:
    """What a SEG for a series of ``shape`` (slices, rows, columns) may hold."""
    slices, rows, columns = shape
    frames = slices * MAX_FRAMES_PER_SLICE
    pixels = min(frames * rows * columns, MAX_SEG_PIXELS)
    return SegLimits(
        frames=frames, pixels=pixels, meta_bytes=min(MAX_META_BYTES, (64 << 10) + META_BYTES_PER_FRAME * frames)
    )


def _referenced_uids(item: Any) -> list[str]:
    uids = []
    for derivation in item.get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            uid = source.get("ReferencedSOPInstanceUID")
            if uid:
                uids.append(str(uid))
    return uids


def _body(data: bytes, limits: SegLimits) -> tuple[Any, bytes, bool | None]:
    """File meta, the dataset's bytes (inflated, bounded, when deflated) and whether its VR is
    implicit (None: deflated, i.e. explicit, parsed apart from the file meta)."""
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)  # only group 0002: small, and bounded by the file's size
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, struct.error) as exc:
        raise SegError(f"not readable DICOM ({type(exc).__name__})") from exc
    syntax = str(meta.get("TransferSyntaxUID", ""))
    rest = data[fp.tell():]
    if syntax in _NATIVE:
        return meta, rest, _NATIVE[syntax]
    if syntax != _DEFLATED:
        raise SegError(
            "transfer syntax is not explicit or implicit VR little endian or deflated explicit VR little endian"
        )
    # pydicom inflates the whole stream at once: inflate here, no further than the limit.
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(rest, limits.file_bytes + 1)
    except zlib.error as exc:
        raise SegError("deflated data is damaged") from exc
    if len(body) > limits.file_bytes or inflater.unconsumed_tail:
        raise HostileOutput(f"{_WHAT} inflates past {limits.file_bytes} bytes, more than a SEG of this series needs")
    return meta, body, None


def _pixel_data_at(body: bytes, implicit: bool, limits: SegLimits) -> int:
    """Where the top-level Pixel Data element starts, found by letting pydicom parse no more than
    the header a SEG of this series may have (so what it builds from the header is bounded
    however the file is made; a search for the tag's bytes could match inside a value)."""
    from pydicom.filereader import read_dataset

    window = limits.meta_bytes + 12
    fp = io.BytesIO(body[:window])
    try:
        read_dataset(fp, implicit, True, stop_when=lambda tag, vr, length: tag == _PIXEL_DATA)
    except Exception:  # noqa: BLE001 - whatever the header does wrong, Pixel Data was not reached
        pass
    at = fp.tell()
    if body[at : at + 4] == _PIXEL_DATA_TAG and at + 12 <= window:
        return at
    if len(body) > window:
        raise HostileOutput(
            f"{_WHAT} has no Pixel Data within the first {limits.meta_bytes} bytes of its dataset",
            f"{_WHAT} has more header before Pixel Data than the {limits.meta_bytes} bytes a SEG of this series needs",
        )
    raise SegError("it has no readable Pixel Data")


def _check_layout(body: bytes, implicit: bool, limits: SegLimits) -> None:
    """Bound the header and the pixel data before pydicom parses the whole file."""
    at = _pixel_data_at(body, implicit, limits)
    if implicit:
        start, length = at + 8, int.from_bytes(body[at + 4 : at + 8], "little")
    else:
        if body[at + 4 : at + 6] not in (b"OB", b"OW"):
            raise SegError("Pixel Data is not native (OB or OW) data")
        start, length = at + 12, int.from_bytes(body[at + 8 : at + 12], "little")
    if length == 0xFFFFFFFF:
        raise SegError("Pixel Data is encapsulated; write native (uncompressed) frames")
    if length > limits.pixels:
        raise HostileOutput(
            f"{_WHAT} has {length} bytes of Pixel Data; the limit for this series is {limits.pixels}",
            f"{_WHAT} has more Pixel Data than the {limits.pixels} bytes a SEG of this series may hold",
        )
    if start + length > len(body) or len(body) - (start + length) > TRAILING_BYTES:
        raise SegError("Pixel Data's length does not match the file")


def read_seg(source: Path | bytes, slice_uids: Sequence[str], shape: tuple[int, int, int]) -> np.ndarray:
    """The mask of one case: ``slice_uids`` are the SOP Instance UIDs of its first series in
    slice order, ``shape`` is (slices, rows, columns). ``source`` is the file's bytes (read with
    :mod:`safeio`) or a path whose folder is trusted."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_dataset
    from pydicom.uid import ExplicitVRLittleEndian

    limits = seg_limits(shape)
    data = source if isinstance(source, bytes) else read_regular(source, _WHAT, limits.file_bytes)
    if len(data) > limits.file_bytes:
        raise HostileOutput(
            f"{_WHAT} is {len(data)} bytes; the limit for this series is {limits.file_bytes}",
            f"{_WHAT} is larger than the {limits.file_bytes} bytes a SEG of this series needs",
        )
    meta, body, implicit = _body(data, limits)
    _check_layout(body, bool(implicit), limits)
    try:
        if implicit is None:
            ds = read_dataset(io.BytesIO(body), is_implicit_VR=False, is_little_endian=True)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
        else:
            ds = pydicom.dcmread(io.BytesIO(data))
        sop_class = str(ds.get("SOPClassUID", ""))
        dims = (
            ds.get("Rows"),
            ds.get("Columns"),
            ds.get("NumberOfFrames"),
            ds.get("BitsAllocated"),
            ds.get("SamplesPerPixel"),
        )
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, struct.error) as exc:
        raise SegError(f"not readable DICOM ({type(exc).__name__})") from exc
    if sop_class != SEG_SOP_CLASS:
        raise SegError("its SOP class is not Segmentation Storage")
    slices, rows, columns = shape
    if dims[:2] != (rows, columns):
        raise SegError(
            f"frames are {dims[0]}x{dims[1]}, the series is {rows}x{columns}",
            f"frames do not have the series' size, {rows}x{columns}",
        )
    try:
        frames_declared = int(dims[2] or 1)
    except (TypeError, ValueError) as exc:
        raise SegError("Number of Frames is not a number") from exc
    if not 1 <= frames_declared <= limits.frames:
        raise SegError(f"Number of Frames is not between 1 and {limits.frames} ({MAX_FRAMES_PER_SLICE} per slice)")
    if frames_declared * rows * columns > limits.pixels:
        raise HostileOutput(f"{_WHAT} declares more than {limits.pixels} pixels")
    if dims[3] not in (1, 8) or dims[4] not in (None, 1):
        raise SegError("pixels are not 1-bit (BINARY) or 8-bit (FRACTIONAL) with one sample")
    try:
        per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    except Exception as exc:  # noqa: BLE001 - a malformed sequence is the vendor file's
        raise SegError(f"per-frame functional groups are not readable ({type(exc).__name__})") from exc
    if len(per_frame) != frames_declared:
        raise SegError(
            f"{len(per_frame)} per-frame items for {frames_declared} frames",
            "the number of per-frame items is not Number of Frames",
        )
    needed = -(-frames_declared * rows * columns * int(dims[3]) // 8)
    if not needed <= len(ds.get("PixelData") or b"") <= needed + 1:
        raise SegError("Pixel Data does not hold Number of Frames frames")
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the vendor file's
        raise SegError(f"pixel data cannot be decoded ({type(exc).__name__})") from exc
    frames = pixels.reshape(frames_declared, rows, columns)
    try:
        fractional = str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL"
        half = float(ds.get("MaximumFractionalValue") or 1) / 2 if fractional else 0.0
        uids_per_frame = [_referenced_uids(item) for item in per_frame]
    except Exception as exc:  # noqa: BLE001 - a malformed attribute is the vendor file's
        raise SegError(f"segment attributes are not readable ({type(exc).__name__})") from exc
    if fractional:
        frames = frames >= half
    index = {uid: i for i, uid in enumerate(slice_uids)}
    mask = np.zeros(shape, dtype=bool)
    for number, (frame, uids) in enumerate(zip(frames, uids_per_frame, strict=True), start=1):
        if not uids:
            raise SegError(
                f"frame {number} does not name the image it was derived from",
                "a frame does not name the image it was derived from",
            )
        if any(uid not in index for uid in uids):
            raise SegError(
                f"frame {number} refers to an image that is not in the case's first series",
                "a frame refers to an image that is not in the case's first series",
            )
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
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    if mask.shape[0] != len(sources):
        raise ValueError("one mask slice per source image")
    first = sources[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(SEG_SOP_CLASS)
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
