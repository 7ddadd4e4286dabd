"""grand-challenge-shaped reference classifier: reads the image interface named in
/input/inputs.json, scores it as the reference classifier does and writes the likelihood, a
bare number, to /output/abnormal-likelihood.json (a "Float" output interface).

    python -m lightbox.sandbox.reference.gc_classifier
"""

from __future__ import annotations

import json
import sys

from lightbox.sandbox.reference.classifier import blob_score, probability
from lightbox.sandbox.reference.gc_common import output_dir, read_image


def main(argv: list[str] | None = None) -> int:
    volume, _ = read_image()
    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "abnormal-likelihood.json").write_text(json.dumps(probability(blob_score(volume))))
    print("classified 1 case")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
