"""Synthetic whole-slide files for the slide tests, built with tifffile and pydicom (not with
the code under test). Every identifying value planted here is listed in PLANTED."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw

PATIENT_NAME = "JANE^DOE-SLIDE"
PATIENT_ID = "PID-778899"
FILENAME = "SMITH_J_S12-34567"
USER = "jdoe-pathlab"
SCANNER = "SS1234-SERIAL"
LABEL_NAME = "JANE DOE 1961"
PLANTED = (PATIENT_NAME, PATIENT_ID, FILENAME, USER, SCANNER, "Histo-HOST-7", "Dr Artist")

BASE = (768, 1024)  # rows, columns of the baseline
TILE = (256, 256)


def label_pixels(text: str = LABEL_NAME, size: tuple[int, int] = (300, 400)) -> np.ndarray:
    """A white label with ``text`` drawn in black: pixels that spell a name."""
    image = Image.new("RGB", (size[1], size[0]), "white")
    ImageDraw.Draw(image).text((20, 120), text, fill="black")
    return np.asarray(image)


def tissue(rows: int, columns: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (rows, columns, 3), dtype=np.uint8)


def svs_description(first: bool, rows: int, columns: int) -> str:
    if first:
        return (
            f"Aperio Image Library v12.0.15\r\n{columns}x{rows} [0,0 {columns}x{rows}] (256x256) JPEG/RGB Q=70"
            f"|AppMag = 20|StripeWidth = 2040|ScanScope ID = {SCANNER}|Filename = {FILENAME}|Date = 12/29/09"
            f"|Time = 09:59:15|User = {USER}|MPP = 0.4990|Barcode = {PATIENT_ID}|Left = 25.69"
        )
    header = f"Aperio Image Library v12.0.15\r\n{BASE[1]}x{BASE[0]} -> {columns}x{rows} - "
    return header + f"|AppMag = 20|MPP = 0.998|Filename = {FILENAME}"


IDENTIFYING_TAGS = [
    (65000, "s", 0, f"patient {PATIENT_ID}", True),  # a scanner's private tag carrying an id
    (315, "s", 0, "Dr Artist", True),  # Artist
    (316, "s", 0, "Histo-HOST-7", True),  # HostComputer
    (306, "s", 0, "2009:12:29 09:59:15", True),  # DateTime
]


def write_svs(path: Path, compression: str | None = "jpeg", levels: int = 3) -> list[np.ndarray]:
    """An Aperio-like SVS: baseline, thumbnail, further levels, label, macro. Returns the levels'
    pixels as written (before any lossy coding)."""
    rows, columns = BASE
    base = tissue(rows, columns)
    pyramid = [base[:: 2**i, :: 2**i] for i in range(levels)]
    jpeg = {"compression": compression, "photometric": "rgb"}
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            pyramid[0],
            tile=TILE,
            description=svs_description(True, rows, columns),
            metadata=None,
            software="Aperio Image Library v12.0.15",
            extratags=IDENTIFYING_TAGS,
            **jpeg,
        )
        tif.write(
            base[::8, ::8],
            photometric="rgb",
            metadata=None,
            description=f"Aperio Image Library v12.0.15\r\n{columns}x{rows} -> 128x96 - |User = {USER}",
        )
        for level in pyramid[1:]:
            tif.write(level, tile=TILE, metadata=None, description=svs_description(False, *level.shape[:2]), **jpeg)
        tif.write(
            label_pixels(),
            photometric="rgb",
            subfiletype=1,
            metadata=None,
            description="Aperio Image Library v12.0.15\r\nlabel 400x300",
        )
        tif.write(
            tissue(200, 600, seed=3),
            photometric="rgb",
            subfiletype=9,
            metadata=None,
            description="Aperio Image Library v12.0.15\r\nmacro 600x200",
        )
    return pyramid


def write_generic(path: Path) -> list[np.ndarray]:
    """A generic pyramidal TIFF (reduced-resolution pages, NewSubfileType 1), deflate tiles, a
    description with a patient id, a private tag, and a label page found by its description."""
    rows, columns = BASE
    base = tissue(rows, columns, seed=1)
    pyramid = [base[:: 2**i, :: 2**i] for i in range(3)]
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            pyramid[0],
            tile=TILE,
            compression="zlib",
            photometric="rgb",
            metadata=None,
            description=f"scan of patient {PATIENT_ID} file {FILENAME}",
            extratags=IDENTIFYING_TAGS[:1],
        )
        for level in pyramid[1:]:
            tif.write(level, tile=TILE, compression="zlib", photometric="rgb", subfiletype=1, metadata=None)
        tif.write(label_pixels(), photometric="rgb", subfiletype=1, metadata=None, description="slide label")
    return pyramid


def raw_segments(path: Path, page: int) -> list[bytes]:
    """A page's stored tiles or strips, read at the offsets tifffile reports."""
    with tifffile.TiffFile(path) as tif, open(path, "rb") as fh:
        p = tif.pages[page]
        out = []
        for offset, count in zip(p.dataoffsets, p.databytecounts, strict=True):
            fh.seek(offset)
            out.append(fh.read(count))
        return out
