"""``lightbox deid --format photo SRC DST``: a photo dataset, one folder per case.

``SRC/<case>/**/<photo>`` becomes ``DST/<case token>/<photo token>.jpg|.png``, tokens being
keyed hashes (purposes ``path-photo-case`` and ``path-photo``), since folder and file names
of clinical photos often carry a name or a record number. ``SRC/cohort.csv`` (optional, see
``lightbox.sandbox.cohortsheet``) is validated before any photo is read and written as
``DST/cohort.csv`` keyed by the new case tokens, its patient ids replaced by the keyed patient
pseudonym (the one DICOM data of the same patient gets) and, where the sheet has no
manufacturer, the EXIF Make of the case's first photo filled in. A photo that cannot be
parsed is refused with its reason and nothing of it is written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from lightbox.sandbox.cohortsheet import SHEET_NAME, CaseAttributes, CohortSheet, load_sheet, write_sheet
from lightbox.sandbox.deid.batch import DeidSummary, _progress_bar, available_cores, run_parallel
from lightbox.sandbox.deid.photos import strip_photo
from lightbox.sandbox.deid.photos_parse import PhotoError
from lightbox.sandbox.deid.pseudonyms import Pseudonymizer

_MAKE = re.compile(r"[^A-Za-z0-9 ._-]")


@dataclass(frozen=True, slots=True)
class PhotoResult:
    source: str
    case: str
    output: str | None = None
    reason: str | None = None
    make: str = ""


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _process(src: Path, dst: Path, key: bytes, paths: list[Path]) -> list[PhotoResult]:
    tokens = Pseudonymizer(key)
    results = []
    for path in paths:
        relative = path.relative_to(src).as_posix()
        case = relative.split("/", 1)[0]
        if path.is_symlink():
            results.append(PhotoResult(relative, case, reason="a symbolic link (not followed)"))
            continue
        try:
            stripped = strip_photo(path.read_bytes())
        except PhotoError as exc:
            results.append(PhotoResult(relative, case, reason=exc.reason))
            continue
        except OSError as exc:
            results.append(PhotoResult(relative, case, reason=f"unreadable: {exc.strerror}"))
            continue
        target = dst / tokens.path_token("photo-case", case) / (tokens.path_token("photo", relative) + stripped.suffix)
        _write_atomic(target, stripped.data)
        results.append(PhotoResult(relative, case, target.relative_to(dst).as_posix(), make=stripped.make))
    return results


def _manufacturer(make: str) -> str:
    cleaned = _MAKE.sub("", make).strip()[:64]
    return cleaned if cleaned and cleaned[0].isalnum() else "unknown"


def _output_sheet(
    sheet: CohortSheet, cases: list[str], makes: dict[str, str], tokens: Pseudonymizer
) -> list[CaseAttributes]:
    rows = []
    for case in cases:
        attrs = sheet.get(case)
        rows.append(
            replace(
                attrs,
                case=tokens.path_token("photo-case", case),
                patient=tokens.patient_id("id:" + attrs.patient) if attrs.patient else "",
                manufacturer=attrs.manufacturer
                if attrs.manufacturer != "unknown"
                else _manufacturer(makes.get(case, "")),
            )
        )
    return rows


def deidentify_photo_tree(
    src: Path, dst: Path, *, key: bytes, jobs: int | None = None, progress: bool = False
) -> DeidSummary:
    """De-identify a photo dataset; raises CohortSheetError (before touching any photo) when
    SRC's cohort sheet is invalid; never raises for a bad photo."""
    src, dst = Path(src), Path(dst)
    cases = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.is_symlink())
    sheet = load_sheet(src, cases)
    paths = sorted(p for case in cases for p in (src / case).rglob("*") if p.is_file() or p.is_symlink())
    loose = sorted(p for p in src.iterdir() if (p.is_file() or p.is_symlink()) and p.name != SHEET_NAME)
    summary = DeidSummary(files=len(paths) + len(loose))
    for path in loose:
        summary.errors += 1
        summary.refused.append((path.name, "a photo outside a case folder (one folder per case)"))
    first: dict[str, tuple[str, str]] = {}  # case -> (first photo written, its Make): deterministic whatever the order
    with _progress_bar(len(paths), progress, "deid photos") as bar:
        for chunk in run_parallel(partial(_process, src, dst, key), paths, jobs or available_cores()):
            for result in chunk:
                if result.reason is None:
                    summary.written += 1
                    if result.case not in first or result.source < first[result.case][0]:
                        first[result.case] = (result.source, result.make)
                else:
                    summary.errors += 1
                    summary.refused.append((result.source, result.reason))
            bar.update(len(chunk))
    written_cases = [c for c in cases if c in first]
    if written_cases or sheet.cases:
        dst.mkdir(parents=True, exist_ok=True)
        makes = {case: make for case, (_, make) in first.items()}
        write_sheet(dst / SHEET_NAME, _output_sheet(sheet, written_cases, makes, Pseudonymizer(key)))
    summary.refused.sort()
    return summary
