"""What every reference algorithm does the same way: find its directories, read the manifest
and series, write predictions.json atomically. Only the contract is used, nothing internal."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_INPUT, DEFAULT_OUTPUT = "/input", "/output"


def input_dir() -> Path:
    return Path(os.environ.get("LIGHTBOX_INPUT_DIR", DEFAULT_INPUT))


def output_dir() -> Path:
    return Path(os.environ.get("LIGHTBOX_OUTPUT_DIR", DEFAULT_OUTPUT))


def load_manifest() -> dict[str, Any]:
    return json.loads((input_dir() / "manifest.json").read_text())


def read_series(series: dict[str, Any]) -> np.ndarray:
    """(slices, rows, columns) stored pixel values, in the manifest's slice order."""
    import pydicom

    return np.stack([pydicom.dcmread(input_dir() / f).pixel_array.astype(float) for f in series["files"]])


def box_mean(image: np.ndarray, k: int) -> np.ndarray:
    """k x k moving average with edge padding (same shape as ``image``)."""
    p = k // 2
    a = np.pad(image, ((p, k - 1 - p), (p, k - 1 - p)), mode="edge")
    c = np.pad(np.cumsum(np.cumsum(a, 0), 1), ((1, 0), (1, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def write_predictions(task: str, cases: dict[str, Any]) -> Path:
    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".predictions.json.tmp"
    tmp.write_text(json.dumps({"contractVersion": "v1", "task": task, "cases": cases}))
    tmp.replace(out / "predictions.json")
    return out / "predictions.json"
