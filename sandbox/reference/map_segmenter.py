"""MAP-shaped reference segmenter: a MONAI Application Package's behaviour without its GPU
runtime. Reads the DICOM files in HOLOSCAN_INPUT_PATH (one study), segments the largest series
as the reference segmenter does and writes one DICOM SEG to HOLOSCAN_OUTPUT_PATH, as MONAI
Deploy's DICOM SEG writer does.

    python -m lightbox.sandbox.reference.map_segmenter
"""

from __future__ import annotations

import sys

from lightbox.sandbox.reference.map_common import largest_series, output_dir
from lightbox.sandbox.reference.segmenter import segment
from lightbox.sandbox.segfile import write_seg


def main(argv: list[str] | None = None) -> int:
    volume, headers = largest_series()
    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    write_seg(segment(volume), headers, out / "segmentation.dcm")
    print(f"segmented {len(headers)} slices")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
