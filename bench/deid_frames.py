"""Benchmark ``lightbox deid`` on an encapsulated DICOM whole-slide image against ``cp -r``.

    .venv/bin/python bench/deid_frames.py [--frames 40000]

Two corpora of one VL Whole Slide Microscopy instance each, ``--frames`` baseline JPEG frames of
256x256 noise (Pillow, quality 80, about 44 kB each, 16 distinct tiles repeated):

* ``clean``: frames as an encoder writes them (JFIF APP0 only): the walk finds nothing and the
  pixel data is copied as one range, so the cost over ``cp -r`` is the walk itself;
* ``planted``: every frame with an EXIF APP1 (Artist, DateTime) and a COM with a patient id:
  the pixel data is rebuilt from ranges of the source, one fragment per frame.

Each tool runs in its own process, timed, with its peak resident memory from GNU time (file
pages the process maps count there too); every output is byte-searched for the planted values.
Ratios are to ``cp -r`` of the same corpus in the same run.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from deid_slides import timed  # noqa: E402  (the same timing and peak-memory measurement)

PLANTED = {"artist": b"LEAKARTIST^JANE", "date": b"2024:01:01 10:00:00", "comment": b"LEAKPID-1234"}


def _tiles(planted: bool) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(16):
        buf = io.BytesIO()
        image = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
        if planted:
            exif = Image.Exif()
            exif[0x013B], exif[0x0132] = PLANTED["artist"].decode(), PLANTED["date"].decode()
            image.save(buf, "JPEG", quality=80, exif=exif.tobytes(), comment=PLANTED["comment"])
        else:
            image.save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def write_wsi(path: Path, frames: int, planted: bool) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    tiles = _tiles(planted)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PatientName, ds.PatientID, ds.SpecimenLabelInImage, ds.BurnedInAnnotation = "X^Y", "P1", "NO", "NO"
    ds.Rows = ds.Columns = 256
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([tiles[i % len(tiles)] for i in range(frames)], has_bot=True)
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def count_leaks(out: Path) -> int:
    found: set[bytes] = set()
    for path in (p for p in out.rglob("*") if p.is_file()):
        with open(path, "rb") as fh:
            tail = b""
            while chunk := fh.read(64 << 20):
                window = tail + chunk
                found.update(v for v in PLANTED.values() if v in window)
                tail = window[-64:]
    return len(found)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=40000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lightbox-deid-bench-frames"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    key = work / "key"
    key.write_bytes(os.urandom(32).hex().encode())
    lightbox = str(ROOT / ".venv" / "bin" / "lightbox")
    print(f"{'corpus':8} {'tool':14} {'seconds':>8} {'x cp -r':>8} {'peak RSS MB':>12} {'leaks':>6}")
    try:
        for corpus in ("clean", "planted"):
            t = time.perf_counter()
            write_wsi(work / corpus / "case" / "wsi.dcm", args.frames, corpus == "planted")
            size = (work / corpus / "case" / "wsi.dcm").stat().st_size
            print(f"# {corpus}: {args.frames} frames, {size / 1e9:.2f} GB, written in {time.perf_counter() - t:.1f}s")
            reference = None
            for tool, cmd in (
                ("cp -r", ["cp", "-r", str(work / corpus), str(work / f"{corpus}-cp")]),
                ("lightbox deid", [lightbox, "deid", str(work / corpus), str(work / f"{corpus}-deid"),
                                   "--key-file", str(key), "-j", "1", "--no-progress"]),
            ):
                seconds, rss, status, tail = timed(cmd)
                if status != 0:
                    print(f"{corpus:8} {tool:14} failed ({status}): {tail}")
                    continue
                reference = reference or seconds
                leaks = count_leaks(work / f"{corpus}-{'cp' if tool == 'cp -r' else 'deid'}")
                print(f"{corpus:8} {tool:14} {seconds:8.2f} {seconds / reference:8.2f} {rss:12.0f} {leaks:6d}")
            for suffix in ("-cp", "-deid"):
                shutil.rmtree(work / f"{corpus}{suffix}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
