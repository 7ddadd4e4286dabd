"""The stage step for photo datasets (``StagerConfig.format: photo``).

Same contract as DICOM staging (``lightbox.sandbox.stager``): the photo gate first (PHIFound
names keywords, locations and counts), then the verified content hash, then each case folder
becomes ``/input/case-NNNN/<photo index>/0001.jpg|png`` with one manifest series per photo
(photos of a case differ in size, and a series has one size). ``cases.json`` carries the
cohort sheet's attributes (bodySite, skinType, sex, ageBand, manufacturer, laterality) for
the scorer's subgroups; the sheet itself never reaches the vendor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lightbox.api.run import (
    CASES_FILE,
    EXIT_DATASET_CHANGED,
    EXIT_DATASET_UNREADABLE,
    EXIT_PHI_FOUND,
    MANIFEST_FILE,
    StagerConfig,
)
from lightbox.sandbox.cohortsheet import load_sheet
from lightbox.sandbox.contract import InputCase, InputManifest, InputSeries
from lightbox.sandbox.deid.photos_parse import sniff
from lightbox.sandbox.deid.photos_verify import verify_photo_tree

VERIFIER = "photo"


def _size(path: Path) -> tuple[int, int]:
    """(width, height) from the header; the gate has parsed the file already."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def stage_photos(studies: Path, input_dir: Path, work_dir: Path, config: StagerConfig) -> Any:
    from lightbox.sandbox.stager import StageError, StageResult

    # Other packagings than lightbox are refused before this (stager.stage): their layouts are
    # made from DICOM series.
    report = verify_photo_tree(studies, list(config.deid_options))
    if report.violations:
        parts = [f"{v.keyword} ({v.tag}): {v.occurrences} occurrences in {v.files} files" for v in report.violations]
        message = f"de-identification check failed ({VERIFIER} verifier): " + "; ".join(parts)
        raise StageError("PHIFound", message, EXIT_PHI_FOUND)
    if report.errors:
        # Reasons only, never paths: a folder or file name in a dataset nobody de-identified
        # can be a patient's name, and this message reaches the run's status.
        shown = "; ".join(sorted({line.split(": ", 1)[-1] for line in report.unreadable})[:5])
        message = f"{report.errors} problem(s) in the photo dataset ({report.files} files): {shown}"
        raise StageError("DatasetUnreadable", message, EXIT_DATASET_UNREADABLE)
    expected = config.verified_content_hash
    if expected is not None and report.content_hash != expected:
        raise StageError(
            "DatasetChanged",
            f"the studies changed since the Dataset was verified (verified {expected}, now {report.content_hash}); "
            "verify it again by changing the Dataset's spec.revision",
            EXIT_DATASET_CHANGED,
        )
    folders = sorted(p for p in studies.iterdir() if p.is_dir())
    sheet = load_sheet(studies, [p.name for p in folders])
    cases = [(p.name, sorted(f for f in p.rglob("*") if f.is_file())) for p in folders]
    cases = [(name, files) for name, files in cases if files]
    if not cases:
        raise StageError("DatasetUnreadable", "the studies directory holds no cases", EXIT_DATASET_UNREADABLE)
    if config.max_cases is not None:
        cases = cases[: config.max_cases]
    input_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(len(cases))))
    manifest_cases: list[InputCase] = []
    scorer_cases: dict[str, dict[str, Any]] = {}
    files_total = 0
    for index, (source, files) in enumerate(cases, start=1):
        case_id = f"case-{index:0{width}d}"
        attrs = sheet.get(source)
        series: list[InputSeries] = []
        first_shape: list[int] = []
        for n, path in enumerate(files):
            with open(path, "rb") as fh:
                suffix = ".jpg" if sniff(fh.read(16)) == "jpeg" else ".png"
            target = input_dir / case_id / f"{n:02d}"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / f"0001{suffix}")
            w, h = _size(path)
            first_shape = first_shape or [1, h, w]
            series.append(
                InputSeries(
                    series_instance_uid=f"photo-{n + 1}", modality=attrs.modality,
                    files=[f"{case_id}/{n:02d}/0001{suffix}"], rows=h, columns=w,
                )
            )
        files_total += len(files)
        manifest_cases.append(InputCase(id=case_id, series=series))
        scorer_cases[case_id] = {
            "source": source,
            "patientId": attrs.patient or source,
            **attrs.cohort(),
            "site": "unknown",
            "laterality": attrs.laterality,
            "slices": 1,
            "shape": first_shape,
            "spacing": [1.0, 1.0, 1.0],
            "sopInstanceUids": [],
        }
    manifest = InputManifest(task=config.task, labels=list(config.labels), cases=manifest_cases)
    (input_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(by_alias=True, indent=1))
    cases_doc: dict[str, Any] = {"contractVersion": "v1", "task": config.task, "contentHash": report.content_hash}
    cases_doc["cases"] = scorer_cases
    (work_dir / CASES_FILE).write_text(json.dumps(cases_doc, indent=1))
    return StageResult(
        cases=len(manifest_cases), files=files_total, content_hash=report.content_hash, verifier=VERIFIER
    )
