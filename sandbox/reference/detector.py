"""Honest reference detector: bright flat plateaus (as the sample lesions are), one finding
per connected region at its centroid.

    python -m lightbox.sandbox.reference.detector
"""

from __future__ import annotations

import sys

import numpy as np

from lightbox.sandbox.reference._common import load_manifest, read_series, write_predictions
from lightbox.sandbox.reference.segmenter import segment


def regions(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected regions of a 2-D mask as arrays of (row, column)."""
    seen = np.zeros(mask.shape, bool)
    out = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        stack, members = [start], []
        seen[start] = True
        while stack:
            r, c = stack.pop()
            members.append((r, c))
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1] and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        out.append(np.asarray(members))
    return out


def main(argv: list[str] | None = None) -> int:
    manifest = load_manifest()
    cases = {}
    for case in manifest["cases"]:
        volume = read_series(case["series"][0])
        mask = segment(volume)
        findings = []
        for z in range(mask.shape[0]):
            for region in regions(mask[z] > 0):
                if len(region) < 3:
                    continue
                y, x = region.mean(axis=0)
                score = round(min(1.0, 0.5 + len(region) / 200), 4)
                findings.append(
                    {"location": {"x": round(float(x), 2), "y": round(float(y), 2), "slice": z}, "score": score}
                )
        cases[case["id"]] = {"findings": findings}
    write_predictions("detection", cases)
    print(f"detected findings in {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
