"""grand-challenge-shaped reference segmenter: reads the image interface named in
/input/inputs.json, segments it as the reference segmenter does and writes a compressed
MetaImage to /output/images/lesion-segmentation/output.mha (an "Image" output interface).

    python -m lightbox.sandbox.reference.gc_segmenter
"""

from __future__ import annotations

import sys

from lightbox.sandbox.reference.gc_common import output_dir, read_image, write_mask
from lightbox.sandbox.reference.segmenter import segment


def main(argv: list[str] | None = None) -> int:
    volume, spacing = read_image()
    write_mask(output_dir() / "images" / "lesion-segmentation" / "output.mha", segment(volume), spacing)
    print("segmented 1 case")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
