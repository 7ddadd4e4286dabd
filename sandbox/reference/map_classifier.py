"""MAP-shaped reference classifier: reads the DICOM files in HOLOSCAN_INPUT_PATH (one study),
scores the largest series as the reference classifier does and writes, to HOLOSCAN_OUTPUT_PATH,
a Comprehensive SR whose NUM content item "abnormal" holds the probability (TID 1500 style:
inside an "Imaging Measurements" container), or with ``--json`` a JSON object of label scores.

    python -m lightbox.sandbox.reference.map_classifier [--json]
"""

from __future__ import annotations

import json
import sys
from typing import Any

from lightbox.sandbox.reference.classifier import blob_score, probability
from lightbox.sandbox.reference.map_common import largest_series, output_dir

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def _code(value: str, scheme: str, meaning: str) -> Any:
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def measurement_report(source: Any, series_number: int, items: list[Any]) -> Any:
    """A Comprehensive SR "Imaging Measurement Report" about ``source``'s study holding ``items``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(COMPREHENSIVE_SR)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = COMPREHENSIVE_SR, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = source.StudyInstanceUID, generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", series_number, 1
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("126000", "DCM", "Imaging Measurement Report")])
    group = Dataset()
    group.RelationshipType, group.ValueType, group.ContinuityOfContent = "CONTAINS", "CONTAINER", "SEPARATE"
    group.ConceptNameCodeSequence = Sequence([_code("126010", "DCM", "Imaging Measurements")])
    group.ContentSequence = Sequence(items)
    ds.ContentSequence = Sequence([group])
    return ds


def write_sr(path: Any, p: float, source: Any) -> None:
    """A Comprehensive SR about ``source``'s study with one NUM item named "abnormal"."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    num = Dataset()
    num.RelationshipType, num.ValueType = "CONTAINS", "NUM"
    num.ConceptNameCodeSequence = Sequence([_code("abnormal", "99LIGHTBOX", "abnormal")])
    measured = Dataset()
    measured.NumericValue = f"{p:.6f}"[:16]
    measured.MeasurementUnitsCodeSequence = Sequence([_code("1", "UCUM", "no units")])
    num.MeasuredValueSequence = Sequence([measured])
    pydicom.dcmwrite(path, measurement_report(source, 400, [num]), enforce_file_format=True)


def main(argv: list[str] | None = None) -> int:
    as_json = "--json" in (sys.argv[1:] if argv is None else argv)
    volume, headers = largest_series()
    p = probability(blob_score(volume))
    out = output_dir()
    out.mkdir(parents=True, exist_ok=True)
    if as_json:
        (out / "result.json").write_text(json.dumps({"abnormal": p, "normal": round(1 - p, 6)}))
    else:
        write_sr(out / "result.dcm", p, headers[0])
    print("classified 1 study")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
