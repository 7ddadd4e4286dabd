"""MAP-shaped reference detector: reads the DICOM files in HOLOSCAN_INPUT_PATH (one study), finds
lesions as the reference detector does and writes a Comprehensive SR to HOLOSCAN_OUTPUT_PATH with
one TID 1500-style measurement group per finding: a SCOORD POINT (column, row, origin at the
top-left corner of the top-left pixel) selected from its image, and a NUM "probability".

    python -m lightbox.sandbox.reference.map_detector
"""

from __future__ import annotations

import sys
from typing import Any

from lightbox.sandbox.reference.detector import regions
from lightbox.sandbox.reference.map_classifier import _code, measurement_report
from lightbox.sandbox.reference.map_common import largest_series, output_dir
from lightbox.sandbox.reference.segmenter import segment


def _group(x: float, y: float, image: Any, score: float) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
    selected = Dataset()
    selected.RelationshipType, selected.ValueType = "SELECTED FROM", "IMAGE"
    selected.ReferencedSOPSequence = Sequence([ref])
    point = Dataset()
    point.RelationshipType, point.ValueType, point.GraphicType = "INFERRED FROM", "SCOORD", "POINT"
    point.GraphicData = [x + 0.5, y + 0.5]  # pixel index -> SCOORD's corner origin
    point.ContentSequence = Sequence([selected])
    num = Dataset()
    num.RelationshipType, num.ValueType = "CONTAINS", "NUM"
    num.ConceptNameCodeSequence = Sequence([_code("probability", "99LIGHTBOX", "probability")])
    measured = Dataset()
    measured.NumericValue = f"{score:.4f}"
    measured.MeasurementUnitsCodeSequence = Sequence([_code("1", "UCUM", "no units")])
    num.MeasuredValueSequence = Sequence([measured])
    group = Dataset()
    group.RelationshipType, group.ValueType, group.ContinuityOfContent = "CONTAINS", "CONTAINER", "SEPARATE"
    group.ConceptNameCodeSequence = Sequence([_code("125007", "DCM", "Measurement Group")])
    group.ContentSequence = Sequence([num, point])  # the point beside its score
    return group


def write_sr(path: Any, findings: list[tuple[float, float, Any, float]], source: Any) -> None:
    import pydicom

    report = measurement_report(source, 401, [_group(*f) for f in findings])
    pydicom.dcmwrite(path, report, enforce_file_format=True)


def main(argv: list[str] | None = None) -> int:
    volume, headers = largest_series()
    mask = segment(volume)
    findings = []
    for z in range(mask.shape[0]):
        for region in regions(mask[z] > 0):
            if len(region) < 3:
                continue
            y, x = region.mean(axis=0)
            findings.append((float(x), float(y), headers[z], round(min(1.0, 0.5 + len(region) / 200), 4)))
    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    write_sr(out / "findings.dcm", findings, headers[0])
    print(f"{len(findings)} findings")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
