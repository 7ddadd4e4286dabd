"""Honest reference classifier: a blob detector (difference of box filters) mapped to a
probability with a fixed logistic. Deliberately simple; it predicts the sample dataset's
labels well but not perfectly.

    python -m lightbox.sandbox.reference.classifier
"""

from __future__ import annotations

import math
import sys

import numpy as np

from lightbox.sandbox.reference._common import box_mean, load_manifest, read_series, write_predictions

CENTRE, WIDTH = 0.38, 0.05


def blob_score(volume: np.ndarray) -> float:
    best = 0.0
    for image in volume:
        k1 = max(3, image.shape[0] // 32 * 2 + 1)
        contrast = box_mean(image, k1) - box_mean(image, 3 * k1)
        spread = float(np.percentile(image, 99) - np.percentile(image, 1)) or 1.0
        best = max(best, float(contrast.max()) / spread)
    return best


def probability(feature: float) -> float:
    return round(1.0 / (1.0 + math.exp(-(feature - CENTRE) / WIDTH)), 6)


def main(argv: list[str] | None = None) -> int:
    manifest = load_manifest()
    labels = manifest.get("labels") or ["normal", "abnormal"]
    positive = "abnormal" if "abnormal" in labels else labels[-1]
    negatives = [label for label in labels if label != positive]
    cases = {}
    for case in manifest["cases"]:
        p = probability(blob_score(read_series(case["series"][0])))
        scores = {positive: p}
        for label in negatives:
            scores[label] = round((1.0 - p) / len(negatives), 6)
        cases[case["id"]] = {"scores": scores}
    write_predictions("classification", cases)
    print(f"classified {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
