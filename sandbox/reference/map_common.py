"""What the MAP-shaped reference algorithms share: the folders a MONAI Application Package is
told by its host (MAP spec 1.0: HOLOSCAN_INPUT_PATH/HOLOSCAN_OUTPUT_PATH; 0.1: MONAI_INPUTPATH/
MONAI_OUTPUTPATH) and the study's largest series read from the DICOM files found there, as a
MONAI Deploy DICOM loader and series selector would."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_INPUT, DEFAULT_OUTPUT = "/var/holoscan/input", "/var/holoscan/output"


def input_dir() -> Path:
    return Path(os.environ.get("HOLOSCAN_INPUT_PATH") or os.environ.get("MONAI_INPUTPATH") or DEFAULT_INPUT)


def output_dir() -> Path:
    return Path(os.environ.get("HOLOSCAN_OUTPUT_PATH") or os.environ.get("MONAI_OUTPUTPATH") or DEFAULT_OUTPUT)


def largest_series() -> tuple[np.ndarray, list[Any]]:
    """(slices, rows, columns) pixels and the headers of the study's largest series, in slice order."""
    import pydicom

    series: dict[str, list[Any]] = defaultdict(list)
    for path in sorted(p for p in input_dir().rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        series[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    chosen = max(series.values(), key=len)
    chosen.sort(key=lambda ds: int(ds.get("InstanceNumber") or 0))
    return np.stack([ds.pixel_array.astype(float) for ds in chosen]), chosen
