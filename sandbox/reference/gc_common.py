"""What the grand-challenge-shaped reference algorithms share: /input/inputs.json names the
image interface and its folder, the image is a MetaImage, results go to /output. The MetaImage
reader and writer here are deliberately separate from Lightbox's (a vendor has its own), so the
end-to-end tests cross two implementations.

/input and /output are fixed on grand-challenge; LIGHTBOX_INPUT_DIR/LIGHTBOX_OUTPUT_DIR, when set,
move them (only the development runner, which cannot mount at fixed paths, needs that)."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np

_TYPES = {
    "MET_UCHAR": "<u1",
    "MET_SHORT": "<i2",
    "MET_USHORT": "<u2",
    "MET_INT": "<i4",
    "MET_FLOAT": "<f4",
    "MET_DOUBLE": "<f8",
}


def input_dir() -> Path:
    return Path(os.environ.get("LIGHTBOX_INPUT_DIR") or "/input")


def output_dir() -> Path:
    return Path(os.environ.get("LIGHTBOX_OUTPUT_DIR") or "/output")


def read_image() -> tuple[np.ndarray, list[float]]:
    """The one image input as (slices, rows, columns) and its spacing (x, y, z) in mm."""
    inputs = json.loads((input_dir() / "inputs.json").read_text())
    image = next(item for item in inputs if item["interface"]["kind"] == "Image")
    folder = input_dir() / image["interface"]["relative_path"]
    path = next(folder.glob("*.mha"))
    data = path.read_bytes()
    marker = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    header = dict(line.split(" = ", 1) for line in data[:marker].decode().splitlines())
    dims = [int(v) for v in header["DimSize"].split()]
    raw = data[marker:]
    if header.get("CompressedData") == "True":
        raw = zlib.decompress(raw)
    volume = np.frombuffer(raw, dtype=_TYPES[header["ElementType"]]).reshape(dims[::-1]).astype(float)
    return volume, [float(v) for v in header["ElementSpacing"].split()]


def write_mask(path: Path, mask: np.ndarray, spacing: list[float]) -> None:
    """A zlib-compressed MET_UCHAR MetaImage, as SimpleITK writes with compression on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = zlib.compress(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    z, y, x = mask.shape
    header = (
        f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = True\n"
        f"CompressedDataSize = {len(body)}\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\n"
        f"ElementSpacing = {' '.join(map(str, spacing))}\nDimSize = {x} {y} {z}\n"
        "ElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode() + body)
