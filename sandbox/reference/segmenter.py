"""Honest reference segmenter: finds the flat bright plateau the sample lesions have and
thresholds around it. Writes one ``masks/<case>.npz`` per case, or with ``--dicom-seg`` one
DICOM SEG ``masks/<case>.dcm`` (the contract's other mask format).

    python -m lightbox.sandbox.reference.segmenter [--dicom-seg]
"""

from __future__ import annotations

import sys

import numpy as np

from lightbox.sandbox.reference._common import input_dir, load_manifest, output_dir, read_series, write_predictions

MIN_PLATEAU_PIXELS = 12


def segment(volume: np.ndarray) -> np.ndarray:
    top = float(volume.max())
    plateau = int(np.count_nonzero(volume >= top - 1e-6 * max(abs(top), 1.0)))
    if plateau < MIN_PLATEAU_PIXELS:
        return np.zeros(volume.shape, dtype=np.uint8)
    median = float(np.median(volume))
    return (volume >= median + 0.85 * (top - median)).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    dicom_seg = "--dicom-seg" in (sys.argv[1:] if argv is None else argv)
    manifest = load_manifest()
    masks = output_dir() / "masks"
    masks.mkdir(parents=True, exist_ok=True)
    cases = {}
    for case in manifest["cases"]:
        series = case["series"][0]
        mask = segment(read_series(series))
        if dicom_seg:
            import pydicom

            from lightbox.sandbox.segfile import write_seg

            sources = [pydicom.dcmread(input_dir() / f, stop_before_pixels=True) for f in series["files"]]
            write_seg(mask, sources, masks / f"{case['id']}.dcm")
            cases[case["id"]] = {"mask": f"masks/{case['id']}.dcm"}
        else:
            np.savez_compressed(masks / f"{case['id']}.npz", mask=mask)
            cases[case["id"]] = {"mask": f"masks/{case['id']}.npz"}
    write_predictions("segmentation", cases)
    print(f"segmented {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
