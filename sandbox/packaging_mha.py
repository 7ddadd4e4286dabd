"""MetaImage (``.mha``, one file: text header then ``ElementDataFile = LOCAL`` and the voxels),
the image format of grand-challenge algorithm containers.

Written by the stage step (the case's first series, for the vendor) and read by the scorer (the
vendor's segmentation, hostile). The reader is ours rather than SimpleITK's so every size is
checked against what a mask of the case's image needs before anything is allocated or inflated:
the header is bounded, the dimensions must be the case's, only data inside the file (``LOCAL``)
is read (another ``ElementDataFile`` could name any path), and zlib data is inflated at most to
the expected size plus one byte. Tests check both directions against SimpleITK.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightbox.sandbox.safeio import HostileOutput, Unreadable

MAX_HEADER_BYTES = 16 << 10
_WHAT = "a MetaImage (.mha) mask"
# MetaIO's element types; the header names one, little-endian unless ElementByteOrderMSB says otherwise.
ELEMENT_TYPES: dict[str, str] = {
    "MET_UCHAR": "u1",
    "MET_CHAR": "i1",
    "MET_USHORT": "u2",
    "MET_SHORT": "i2",
    "MET_UINT": "u4",
    "MET_INT": "i4",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}
_NUMPY_TO_MET = {np.dtype(v).newbyteorder("<"): k for k, v in ELEMENT_TYPES.items()}
_KNOWN_KEYS = {
    "ObjectType",
    "NDims",
    "DimSize",
    "ElementType",
    "ElementDataFile",
    "BinaryData",
    "BinaryDataByteOrderMSB",
    "ElementByteOrderMSB",
    "CompressedData",
    "CompressedDataSize",
    "ElementSpacing",
    "ElementSize",
    "Offset",
    "Origin",
    "Position",
    "TransformMatrix",
    "Rotation",
    "Orientation",
    "CenterOfRotation",
    "AnatomicalOrientation",
    "ElementNumberOfChannels",
    "Comment",
    "ObjectSubType",
    "TransformType",
    "Modality",
    "ITK_InputFilterName",
    "HeaderSize",
    "ElementMin",
    "ElementMax",
    "Name",
    "ID",
    "ParentID",
    "Color",
    "ITK_original_direction",
    "ITK_original_spacing",
    "DistanceUnits",
}


def write_mha(path: Path, volume: np.ndarray, spacing_zyx: Sequence[float]) -> None:
    """``volume`` (slices, rows, columns) as an uncompressed 3-D MetaImage; origin 0 and identity
    direction, so a point in millimetres is its voxel index times ``spacing``."""
    array = np.ascontiguousarray(volume)
    dtype = array.dtype.newbyteorder("<")
    if dtype not in _NUMPY_TO_MET:
        raise ValueError(f"no MetaImage element type for {array.dtype}")
    z, y, x = array.shape
    sz, sy, sx = (float(s) for s in spacing_zyx)
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\nCenterOfRotation = 0 0 0\nAnatomicalOrientation = RAI\n"
        f"ElementSpacing = {sx!r} {sy!r} {sz!r}\nDimSize = {x} {y} {z}\nElementType = {_NUMPY_TO_MET[dtype]}\n"
        "ElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode("ascii") + array.astype(dtype, copy=False).tobytes())


def _header(data: bytes) -> tuple[dict[str, str], int]:
    """The header's fields and where the voxels start (after the ElementDataFile line)."""
    fields: dict[str, str] = {}
    pos = 0
    while True:
        end = data.find(b"\n", pos, MAX_HEADER_BYTES)
        if end < 0:
            raise Unreadable(f"{_WHAT} has no ElementDataFile line within the first {MAX_HEADER_BYTES} bytes")
        try:
            line = data[pos:end].decode("ascii").strip()
        except UnicodeDecodeError:
            raise Unreadable(f"{_WHAT} has a header line that is not ASCII") from None
        pos = end + 1
        if not line:
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key not in _KNOWN_KEYS:
            raise Unreadable(f"{_WHAT} has a header line that is not a MetaImage field")
        if key in fields:
            raise Unreadable(f"{_WHAT} repeats a header field")
        fields[key] = value.strip()
        if key == "ElementDataFile":
            return fields, pos


def _flag(fields: dict[str, str], key: str) -> bool:
    value = fields.get(key, "False")
    if value not in ("True", "False", "true", "false", "1", "0"):
        raise Unreadable(f"{_WHAT}: {key} is not True or False")
    return value in ("True", "true", "1")


def read_mha(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """The voxels of a vendor's ``.mha`` as (slices, rows, columns), which must be ``shape``.

    Unreadable: this case failed (the message names the rule, never a value from the file).
    HostileOutput: the data would inflate past what the image needs; the run is refused."""
    fields, start = _header(data)
    if fields.get("ObjectType", "Image") != "Image":
        raise Unreadable(f"{_WHAT} is not an Image object")
    if fields["ElementDataFile"] != "LOCAL":
        raise Unreadable(f"{_WHAT} keeps its voxels in another file; only ElementDataFile = LOCAL is read")
    if fields.get("ElementNumberOfChannels", "1") != "1":
        raise Unreadable(f"{_WHAT} has more than one channel per voxel")
    if not _flag(fields, "BinaryData") and "BinaryData" in fields:
        raise Unreadable(f"{_WHAT} holds ASCII voxels; write binary data")
    try:
        ndims = int(fields.get("NDims", ""))
        dims = [int(v) for v in fields.get("DimSize", "").split()]
    except ValueError:
        raise Unreadable(f"{_WHAT}: NDims or DimSize is not a list of integers") from None
    if ndims not in (2, 3) or len(dims) != ndims or any(d < 1 for d in dims):
        raise Unreadable(f"{_WHAT}: NDims must be 2 or 3 with as many positive DimSize values")
    slices, rows, columns = shape
    wanted = [columns, rows, slices] if ndims == 3 else [columns, rows]
    if dims != wanted or (ndims == 2 and slices != 1):
        raise Unreadable(f"{_WHAT}: DimSize is not the case's image (columns rows slices = {columns} {rows} {slices})")
    code = ELEMENT_TYPES.get(fields.get("ElementType", ""))
    if code is None:
        raise Unreadable(f"{_WHAT}: ElementType must be one of {', '.join(ELEMENT_TYPES)}")
    msb = _flag(fields, "ElementByteOrderMSB") or _flag(fields, "BinaryDataByteOrderMSB")
    dtype = np.dtype(code).newbyteorder(">" if msb else "<")
    needed = slices * rows * columns * dtype.itemsize
    body = data[start:]
    if _flag(fields, "CompressedData"):
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(body, needed + 1)
        except zlib.error:
            raise Unreadable(f"{_WHAT}: its compressed data is not zlib") from None
        if len(raw) > needed or inflater.unconsumed_tail:
            raise HostileOutput(f"{_WHAT} inflates past the {needed} bytes the case's image needs")
    else:
        raw = body
    if len(raw) != needed:
        raise Unreadable(f"{_WHAT} holds a different number of voxels than DimSize says")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def mha_file_limit(shape: tuple[int, int, int]) -> int:
    """The largest ``.mha`` a mask of ``shape`` needs: the header plus doubles, uncompressed."""
    return MAX_HEADER_BYTES + int(np.prod(shape)) * 8
