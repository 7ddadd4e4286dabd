"""Reference slide classifier, written to the contract's ``slides`` section: for each slide it
reads only the level ``maskLevel`` names (the smallest), by its dimensions, and scores the
share of dark (haematoxylin-stained, nuclear) pixels with a fixed logistic.

    python -m lightbox.sandbox.reference.slide_classifier
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from lightbox.sandbox.reference._common import input_dir, load_manifest, write_predictions

CENTRE, WIDTH = 0.0085, 0.0015
DARK = 150  # grey level below which a pixel counts as nuclear


def read_level(slide: dict[str, Any]) -> np.ndarray:
    """The pixels of the manifest's mask level, found among the file's pages by its size."""
    import tifffile

    level = slide["levels"][slide["maskLevel"]]
    with tifffile.TiffFile(input_dir() / slide["file"]) as tif:
        tops: list[Any] = list(tif.pages)
        pages = [q for top in tops for q in [top, *(list(top.pages) if top.subifds else [])]]
        for page in pages:
            if (page.imagewidth, page.imagelength) == (level["width"], level["height"]) and page.is_tiled:
                return np.asarray(page.asarray())
    raise ValueError(f"{slide['file']}: no page of {level['width']}x{level['height']}")


def nuclear_fraction(image: np.ndarray) -> float:
    grey = image[..., :3].astype(float) @ np.array([0.299, 0.587, 0.114]) if image.ndim == 3 else image
    return float((grey < DARK).mean())


def probability(feature: float) -> float:
    return round(1.0 / (1.0 + math.exp(-(feature - CENTRE) / WIDTH)), 6)


def main(argv: list[str] | None = None) -> int:
    manifest = load_manifest()
    labels = manifest.get("labels") or ["normal", "tumour"]
    positive = "tumour" if "tumour" in labels else labels[-1]
    negatives = [label for label in labels if label != positive]
    cases = {}
    for case in manifest["cases"]:
        p = probability(max(nuclear_fraction(read_level(s)) for s in case.get("slides") or []))
        cases[case["id"]] = {"scores": {positive: p, **{n: round((1 - p) / len(negatives), 6) for n in negatives}}}
    write_predictions("classification", cases)
    print(f"classified {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
