"""``lightbox stage``: the trusted step that prepares a run's input.

Verifies the studies' de-identification (refusing with attribute names and counts, never
values), then copies each case's DICOM files to the vendor's input directory under a
per-run case id with ``manifest.json``, and writes ``cases.json`` (case -> source folder,
pseudonymous patient id, subgroup attributes, voxel spacing) to the work directory, which
only the scorer reads.

Environment: LIGHTBOX_STAGER_CONFIG (StagerConfig JSON; may be absent), LIGHTBOX_STUDIES_DIR,
LIGHTBOX_INPUT_DIR, LIGHTBOX_WORK_DIR, LIGHTBOX_TERMINATION_LOG; the manifest's task and labels
come from the config's "task" and "labels".
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lightbox.api.run import (
    CASES_FILE,
    EXIT_DATASET_CHANGED,
    EXIT_DATASET_UNREADABLE,
    EXIT_ISOLATION_NOT_ENFORCED,
    EXIT_OK,
    EXIT_PHI_FOUND,
    INPUT_DIR_ENV,
    MANIFEST_FILE,
    OUTPUT_DIR_ENV,
    STAGER_CONFIG_ENV,
    STUDIES_DIR_ENV,
    WORK_DIR_ENV,
    StagerConfig,
)
from lightbox.sandbox import deidgate, incheck, packaging
from lightbox.sandbox.contract import InputCase, InputManifest, InputSeries
from lightbox.sandbox.deid.verify import age_band
from lightbox.sandbox.packaging_sr import slice_geometry
from lightbox.sandbox.steps import directory, fail, read_json_env, write_termination

EXIT_CONFIG_INVALID = 2


class StageError(Exception):
    def __init__(self, reason: str, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.reason, self.message, self.exit_code = reason, message, exit_code


@dataclass
class StageResult:
    cases: int
    files: int
    content_hash: str
    verifier: str


def _sex(value: Any) -> str:
    text = str(value or "").strip().upper()
    return text if text in ("M", "F", "O") else "unknown"


def _spacing(first: Any, positions: list[float]) -> list[float]:
    row, col = (float(v) for v in (first.get("PixelSpacing") or [1.0, 1.0]))
    gaps = [abs(b - a) for a, b in zip(positions, positions[1:], strict=False) if abs(b - a) > 0]
    if gaps:
        slice_gap = sum(gaps) / len(gaps)
    else:
        slice_gap = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    return [round(slice_gap, 6), row, col]


def _has_geometry(ds: Any) -> bool:
    iop = ds.get("ImageOrientationPatient")
    return ds.get("ImagePositionPatient") is not None and iop is not None and len(iop) == 6


def _position_along_normal(ds: Any) -> float:
    """Where the slice lies along its normal, in mm; without geometry only an order (the
    instance number), which must not be taken for a distance."""
    ipp = ds.get("ImagePositionPatient")
    iop = ds.get("ImageOrientationPatient")
    if not _has_geometry(ds):
        return float(ds.get("InstanceNumber") or 0)
    r, c = [float(v) for v in iop[:3]], [float(v) for v in iop[3:]]
    normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    # A position of other than three values is read as far as it goes, as it always was.
    return sum(float(p) * n for p, n in zip(ipp, normal, strict=False))


def _case_folders(studies: Path) -> list[tuple[str, list[Path]]]:
    folders = sorted(p for p in studies.iterdir() if p.is_dir())
    cases = [(p.name, sorted(f for f in p.rglob("*") if f.is_file())) for p in folders]
    loose = sorted(p for p in studies.iterdir() if p.is_file())
    if loose:
        import pydicom

        by_study: dict[str, list[Path]] = defaultdict(list)
        for f in loose:
            by_study[str(pydicom.dcmread(f, stop_before_pixels=True).get("StudyInstanceUID", f.name))].append(f)
        cases += sorted(by_study.items())
    return [(name, files) for name, files in cases if files]


def stage(
    studies: Path,
    input_dir: Path,
    work_dir: Path,
    config: StagerConfig,
    *,
    verifier: Callable[..., Any] | None = None,
    output_dir: Path | None = None,
) -> StageResult:
    """Verify and stage; ``verifier`` overrides the deid gate (vendor check's synthetic data only)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not studies.is_dir():
        raise StageError("DatasetUnreadable", "the studies directory is missing", EXIT_DATASET_UNREADABLE)
    if (refusal := packaging.format_refusal(config.packaging, config.format)) is not None:
        raise StageError("ConfigInvalid", refusal, EXIT_CONFIG_INVALID)
    if config.format == "photo":
        from lightbox.sandbox.photostage import stage_photos

        return stage_photos(studies, input_dir, work_dir, config)
    if verifier is not None:
        verifier_name = getattr(verifier, "__name__", "custom")
    else:
        try:
            verifier, verifier_name = deidgate.load_verifier()
        except deidgate.VerifierUnavailable as exc:
            raise StageError("VerifierUnavailable", str(exc), EXIT_CONFIG_INVALID) from exc
    report = verifier(studies, list(config.deid_options))
    if report.violations:
        parts = [f"{v.keyword} {v.tag}: {v.occurrences} occurrences in {v.files} files" for v in report.violations]
        raise StageError(
            "PHIFound",
            f"de-identification check failed ({verifier_name} verifier, options {sorted(config.deid_options)}): "
            + "; ".join(parts),
            EXIT_PHI_FOUND,
        )
    errors = deidgate.error_count(report)
    if errors:
        raise StageError(
            "DatasetUnreadable", f"{errors} of {report.files} files are not readable DICOM", EXIT_DATASET_UNREADABLE
        )
    if not report.ok:
        raise StageError("PHIFound", f"de-identification check did not pass ({verifier_name} verifier)", EXIT_PHI_FOUND)
    # Identifying data first (above): it is the graver finding. Then provenance: the run must
    # read the data the Dataset's verification described (case count, cohort, hash).
    expected = config.verified_content_hash
    if expected is not None and report.content_hash != expected:
        raise StageError(
            "DatasetChanged",
            f"the studies changed since the Dataset was verified (verified {expected}, now {report.content_hash}); "
            "verify it again by changing the Dataset's spec.revision",
            EXIT_DATASET_CHANGED,
        )
    if config.format == "slide-tiff":  # the gate above covers slide files (sandbox/deid/slide_tiff.py)
        from lightbox.sandbox.slidestage import stage_slides

        return stage_slides(studies, input_dir, work_dir, config, report.content_hash, verifier_name)

    folders = _case_folders(studies)
    if not folders:
        raise StageError("DatasetUnreadable", "the studies directory holds no cases", EXIT_DATASET_UNREADABLE)
    if config.max_cases is not None:
        folders = folders[: config.max_cases]
    input_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    manifest_cases: list[InputCase] = []
    scorer_cases: dict[str, dict[str, Any]] = {}
    files_total = 0
    width = max(4, len(str(len(folders))))
    for index, (source, files) in enumerate(folders, start=1):
        case_id = f"case-{index:0{width}d}"
        series: dict[str, list[tuple[float, int, Path, Any]]] = defaultdict(list)
        for f in files:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
                raise StageError(
                    "DatasetUnreadable", f"a file of case {case_id} is not readable DICOM", EXIT_DATASET_UNREADABLE
                ) from exc
            series[str(ds.get("SeriesInstanceUID", ""))].append(
                (_position_along_normal(ds), int(ds.get("InstanceNumber") or 0), f, ds)
            )
        ordered = sorted(series.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        entries: list[InputSeries] = []
        first_ds = None
        slice_uids: list[str] = []
        positions: list[float] = []
        first_series: list[Any] = []
        for s_index, (uid, members) in enumerate(ordered):
            members.sort(key=lambda m: (m[1], m[0]) if any(x[1] for x in members) else (m[0], 0))
            target = input_dir / case_id / f"{s_index:02d}"
            target.mkdir(parents=True, exist_ok=True)
            rel: list[str] = []
            for n, (_, _, path, _) in enumerate(members, start=1):
                name = f"{n:04d}.dcm"
                shutil.copyfile(path, target / name)
                rel.append(f"{case_id}/{s_index:02d}/{name}")
            ds0 = members[0][3]
            if s_index == 0:
                first_ds = ds0
                positions = [m[0] for m in members] if all(_has_geometry(m[3]) for m in members) else []
                slice_uids = [str(m[3].get("SOPInstanceUID", "")) for m in members]
                first_series = [m[3] for m in members]
            entries.append(
                InputSeries(
                    series_instance_uid=uid[:64] or "unknown",
                    modality=str(ds0.get("Modality", "OT"))[:16] or "OT",
                    files=rel,
                    rows=int(ds0.get("Rows") or 1),
                    columns=int(ds0.get("Columns") or 1),
                )
            )
            files_total += len(members)
        manifest_cases.append(InputCase(id=case_id, series=entries))
        assert first_ds is not None
        scorer_cases[case_id] = {
            "source": source,
            "patientId": str(first_ds.get("PatientID", "") or source),
            "sex": _sex(first_ds.get("PatientSex")),
            "ageBand": age_band(str(first_ds.get("PatientAge", ""))),
            "manufacturer": str(first_ds.get("Manufacturer", "") or "unknown"),
            "site": str(first_ds.get("ClinicalTrialSiteID", "") or "unknown"),
            "slices": len(entries[0].files),
            "shape": [len(entries[0].files), entries[0].rows, entries[0].columns],
            "spacing": _spacing(first_ds, positions),
            # A DICOM SEG mask names its slices by these (scorer only; the vendor has the files).
            "sopInstanceUids": slice_uids,
            # A MAP's DICOM SR must be about this study (sandbox/packaging_sr.py).
            "studyInstanceUid": str(first_ds.get("StudyInstanceUID", "")),
            # and its SCOORD3D points are placed on the slices by this (None without geometry)
            "geometry": slice_geometry(first_series, _spacing(first_ds, positions)[0]) if positions else None,
        }
    task = config.task
    manifest = InputManifest(task=task, labels=list(config.labels), cases=manifest_cases)
    (input_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(by_alias=True, indent=1))
    (work_dir / CASES_FILE).write_text(
        json.dumps(
            {"contractVersion": "v1", "task": task, "contentHash": report.content_hash, "cases": scorer_cases}, indent=1
        )
    )
    # Another packaging's layout (one folder per case, run once per case: sandbox/packaging.py).
    packaging.lay_out(config.packaging, input_dir, manifest_cases, scorer_cases, output_dir)
    return StageResult(
        cases=len(manifest_cases), files=files_total, content_hash=report.content_hash, verifier=verifier_name
    )


def _config() -> StagerConfig:
    return StagerConfig.model_validate(read_json_env(STAGER_CONFIG_ENV))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightbox stage", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    # First, before reading any study: the vendor container starts after this step, so only
    # once this pod is seen cut off (lightbox.sandbox.incheck, docs/isolation.md).
    refused = incheck.run_from_environment()
    if refused is not None:
        return fail(incheck.REASON, refused, EXIT_ISOLATION_NOT_ENFORCED)
    try:
        config = _config()
    except (ValueError, ValidationError) as exc:
        msg = exc.errors(include_input=False) if isinstance(exc, ValidationError) else str(exc)
        return fail("ConfigInvalid", f"{STAGER_CONFIG_ENV}: {msg}", EXIT_CONFIG_INVALID)
    try:
        result = stage(
            directory(STUDIES_DIR_ENV), directory(INPUT_DIR_ENV), directory(WORK_DIR_ENV), config,
            output_dir=directory(OUTPUT_DIR_ENV) if packaging.runs_per_case(config.packaging) else None,
        )
    except StageError as exc:
        print(f"lightbox stage: {exc.reason}: {exc.message}", file=sys.stderr)
        return fail(exc.reason, exc.message, exc.exit_code)
    summary = {
        "cases": result.cases,
        "files": result.files,
        "contentHash": result.content_hash,
        "verifier": result.verifier,
    }
    write_termination(json.dumps(summary))
    print(f"lightbox stage: staged {result.cases} cases ({result.files} files), verifier {result.verifier}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
