"""The cohort sheet of a whole-slide TIFF dataset through ``lightbox deid --format slide-tiff``
and the gate (the sheet itself: :mod:`lightbox.sandbox.cohortsheet`, :data:`SLIDE_COLUMNS`).

A slide file carries no patient, specimen site or stain a reader can trust (TIFF has no such
fields; an Aperio description is free text and is dropped), so the pathology site gives them
per case in ``SRC/cohort.csv``. De-identification validates it before any slide is read and
writes ``DST/cohort.csv`` keyed by the case tokens the slides' folders get (the same keyed hash
of the case folder's absolute path as :func:`slide_tiff.output_name`), patient ids replaced by
the keyed patient pseudonym. A case whose slides lie in sub-folders of its folder gets other
tokens (one per folder): its row then names no output folder and the stage step refuses the
sheet rather than guess.

The gate accepts the sheet at the dataset's root when it validates against the case folders and
its patient ids are pseudonyms (else PatientID in cohort.csv patient, counted, never shown),
and adds its dimensions (sex, ageBand, specimenSite, stain) to the cohort counts.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from lightbox.sandbox.cohortsheet import (
    SHEET_NAME,
    SLIDE_COLUMNS,
    SLIDE_DIMENSIONS,
    CaseAttributes,
    CohortSheet,
    CohortSheetError,
    load_sheet,
    write_sheet,
)
from lightbox.sandbox.deid.pseudonyms import PATIENT_PSEUDONYM, Pseudonymizer

PATIENT_FINDING = ("PatientID", f"{SHEET_NAME} patient")


def case_folders(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []


def read_source_sheet(src: Path) -> CohortSheet | None:
    """The source's sheet, validated against its case folders; None when there is none.
    Raises CohortSheetError naming the line, column and what is allowed."""
    if not (Path(src) / SHEET_NAME).exists() and not (Path(src) / SHEET_NAME).is_symlink():
        return None
    return load_sheet(Path(src), case_folders(Path(src)), SLIDE_COLUMNS)


def case_token(src: Path, case: str, tokens: Pseudonymizer) -> str:
    """The output folder a case's slides get (slide_tiff.output_name hashes the same path)."""
    return tokens.path_token("slide-case", os.path.dirname(os.path.abspath(os.path.join(src, case, "x"))))


def write_output_sheet(src: Path, dst: Path, sheet: CohortSheet, key: bytes) -> Path:
    """``dst/cohort.csv``: the rows keyed by the cases' output tokens, patients pseudonymised
    as DICOM patients are (same key, same pseudonym)."""
    tokens = Pseudonymizer(key)
    rows = [
        CaseAttributes(
            case=case_token(src, attrs.case, tokens),
            patient=tokens.patient_id("id:" + attrs.patient) if attrs.patient else "",
            modality="SM",
            sex=attrs.sex,
            age_band=attrs.age_band,
            specimen_site=attrs.specimen_site,
            stain=attrs.stain,
        )
        for attrs in sheet.cases.values()
    ]
    Path(dst).mkdir(parents=True, exist_ok=True)
    target = Path(dst) / SHEET_NAME
    write_sheet(target, rows, SLIDE_COLUMNS)
    return target


def gate_check(root: Path) -> tuple[Counter[tuple[str, str]], str | None]:
    """(findings, error) of the sheet at ``root`` for the gate: an invalid sheet is an error
    (its message names line and column, never a value), a patient id that is not a pseudonym
    a finding per row."""
    try:
        sheet = load_sheet(Path(root), case_folders(Path(root)), SLIDE_COLUMNS)
    except (CohortSheetError, OSError) as exc:
        return Counter(), str(exc) if isinstance(exc, CohortSheetError) else f"unreadable: {exc.strerror}"
    named = sum(1 for a in sheet.cases.values() if a.patient and not PATIENT_PSEUDONYM.match(a.patient))
    return Counter({PATIENT_FINDING: named} if named else {}), None


def sheet_cohort(root: Path) -> dict[str, dict[str, int]]:
    """Cases per sex, ageBand, specimenSite and stain from a valid sheet; empty without one."""
    try:
        sheet = read_source_sheet(Path(root))
    except (CohortSheetError, OSError):
        return {}
    if sheet is None:
        return {}
    counts: dict[str, Counter[str]] = {d: Counter() for d in SLIDE_DIMENSIONS}
    for case in case_folders(Path(root)):
        for dim, value in sheet.get(case).cohort(SLIDE_DIMENSIONS).items():
            counts[dim][value] += 1
    return {d: dict(sorted(c.items())) for d, c in counts.items()}
