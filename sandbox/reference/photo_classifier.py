"""Reference dermatology photo classifier: the darkest smoothed spot against the median skin
luminance, in absolute grey levels, mapped to a probability with a fixed logistic.

Deliberately naive in the way real models have been: an absolute contrast is smaller on dark
skin, so it misses more lesions there, which a Validation's skinType subgroups should show.

    python -m lightbox.sandbox.reference.photo_classifier
"""

from __future__ import annotations

import math
import sys

import numpy as np

from lightbox.sandbox.reference._common import box_mean, input_dir, load_manifest, write_predictions

CENTRE, WIDTH = 0.22, 0.04


def contrast(path: str) -> float:
    from PIL import Image

    with Image.open(input_dir() / path) as im:
        grey = np.asarray(im.convert("L"), float)
    k = max(3, grey.shape[0] // 24 * 2 + 1)
    return float(np.median(grey) - box_mean(grey, k).min()) / 255.0


def probability(feature: float) -> float:
    return round(1.0 / (1.0 + math.exp(-(feature - CENTRE) / WIDTH)), 6)


def main(argv: list[str] | None = None) -> int:
    manifest = load_manifest()
    labels = manifest.get("labels") or ["benign", "malignant"]
    positive = "malignant" if "malignant" in labels else labels[-1]
    negatives = [label for label in labels if label != positive]
    cases = {}
    for case in manifest["cases"]:
        p = probability(max(contrast(f) for series in case["series"] for f in series["files"]))
        cases[case["id"]] = {"scores": {positive: p, **{n: round((1 - p) / len(negatives), 6) for n in negatives}}}
    write_predictions("classification", cases)
    print(f"classified {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
