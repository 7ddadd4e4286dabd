"""The cohort sheet of a photo dataset: per case, the attributes a photo does not carry.

``cohort.csv`` at the root of the dataset (beside the case folders), UTF-8, comma-separated,
one header line, then one row per case folder::

    case,patient,modality,bodySite,skinType,sex,ageBand,laterality,manufacturer
    a1b2c3,LBABCDEFGHIJKLMNOP,XC,lower extremity,IV,F,40-59,,Canon

Only ``case`` is required; any other column may be left out, and an empty cell means
unknown. Values come from closed lists (below) so that a cell cannot smuggle free text (a
name typed into the wrong column) into cohort counts and subgroup labels: anything else is
refused with the line, the column and what is allowed, never the value itself.

* ``bodySite``: the ISIC archive's ``anatom_site_general`` vocabulary, which dermatology
  datasets and challenges use, plus ``eye`` for fundus photos.
* ``skinType``: Fitzpatrick I-VI, in Roman numerals.
* ``modality``: XC (external-camera photography: clinical and dermoscopic photos) or OP
  (ophthalmic photography: fundus photos); default XC.
* ``patient``: before de-identification the site's patient id; ``lightbox deid`` replaces it
  with the keyed pseudonym it gives DICOM patients (same key, same pseudonym), and the gate
  accepts only pseudonyms.

A whole-slide dataset (``format: slide-tiff``) has a sheet of the same form with the columns
a pathology site records per case (:data:`SLIDE_COLUMNS`)::

    case,patient,specimenSite,stain,sex,ageBand
    a1b2c3,LBABCDEFGHIJKLMNOP,breast,H&E,F,40-59

* ``specimenSite``: the organ or site the specimen was taken from, from a closed list of
  sites (the primary sites of the TCGA/GDC programme, grouped as pathology reports them).
* ``stain``: H&E, IHC, or a named special stain; stain and scanner are pathology's known
  domain shifts (the scanner comes from the slide file itself: the manufacturer subgroup).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

SHEET_NAME = "cohort.csv"
MAX_SHEET_BYTES = 16 << 20

BODY_SITES = (
    "head/neck", "upper extremity", "lower extremity", "anterior torso", "posterior torso", "lateral torso",
    "torso", "palms/soles", "oral/genital", "eye",
)
SKIN_TYPES = ("I", "II", "III", "IV", "V", "VI")
SPECIMEN_SITES = (
    "breast", "prostate", "lung", "colon/rectum", "stomach", "esophagus", "liver", "pancreas", "kidney",
    "bladder", "skin", "lymph node", "brain", "thyroid", "cervix", "uterus", "ovary", "testis", "head/neck",
    "bone/soft tissue", "bone marrow", "other",
)
STAINS = ("H&E", "IHC", "PAS", "Giemsa", "trichrome", "silver", "Congo red", "other special stain")
MODALITIES = ("XC", "OP")
SEXES = ("M", "F", "O")
AGE_BANDS = ("0-17", "18-39", "40-59", "60-79", "80+")
LATERALITIES = ("L", "R")
_MANUFACTURER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PATIENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

CLOSED: dict[str, tuple[str, ...]] = {
    "modality": MODALITIES,
    "bodySite": BODY_SITES,
    "skinType": SKIN_TYPES,
    "sex": SEXES,
    "ageBand": AGE_BANDS,
    "laterality": LATERALITIES,
    "specimenSite": SPECIMEN_SITES,
    "stain": STAINS,
}
COLUMNS = ("case", "patient", "modality", "bodySite", "skinType", "sex", "ageBand", "laterality", "manufacturer")
SLIDE_COLUMNS = ("case", "patient", "specimenSite", "stain", "sex", "ageBand")
# Cohort counts and subgroups per case, in this order.
COHORT_DIMENSIONS = ("sex", "ageBand", "manufacturer", "modality", "bodySite", "skinType")
SLIDE_DIMENSIONS = ("sex", "ageBand", "specimenSite", "stain")


class CohortSheetError(ValueError):
    """The sheet is not valid; the message names the line and column and what is allowed."""


@dataclass(frozen=True, slots=True)
class CaseAttributes:
    case: str
    patient: str = ""
    modality: str = "XC"
    body_site: str = "unknown"
    skin_type: str = "unknown"
    sex: str = "unknown"
    age_band: str = "unknown"
    laterality: str = ""
    manufacturer: str = "unknown"
    specimen_site: str = "unknown"
    stain: str = "unknown"

    def cohort(self, dimensions: tuple[str, ...] = COHORT_DIMENSIONS) -> dict[str, str]:
        every = {
            "sex": self.sex, "ageBand": self.age_band, "manufacturer": self.manufacturer,
            "modality": self.modality, "bodySite": self.body_site, "skinType": self.skin_type,
            "specimenSite": self.specimen_site, "stain": self.stain,
        }
        return {d: every[d] for d in dimensions}

    def row(self) -> dict[str, str]:
        def cell(value: str) -> str:
            return "" if value == "unknown" else value

        return {
            "case": self.case, "patient": self.patient, "modality": self.modality, "bodySite": cell(self.body_site),
            "skinType": cell(self.skin_type), "sex": cell(self.sex), "ageBand": cell(self.age_band),
            "laterality": self.laterality, "manufacturer": cell(self.manufacturer),
            "specimenSite": cell(self.specimen_site), "stain": cell(self.stain),
        }


@dataclass(frozen=True, slots=True)
class CohortSheet:
    cases: dict[str, CaseAttributes] = field(default_factory=dict)

    def get(self, case: str) -> CaseAttributes:
        return self.cases.get(case) or CaseAttributes(case)


def _allowed(column: str) -> str:
    values = CLOSED[column]
    return ", ".join(values) + " or empty (unknown)"


def _cell(column: str, value: str, where: str) -> str:
    value = value.strip()
    if not value:
        return "unknown" if column not in ("patient", "laterality") else ""
    if column in CLOSED:
        if value not in CLOSED[column]:
            raise CohortSheetError(f"{where}, column {column}: not an allowed value; allowed: {_allowed(column)}")
        return value
    if column == "manufacturer":
        if not _MANUFACTURER.match(value):
            raise CohortSheetError(f"{where}, column manufacturer: at most 64 letters, digits, spaces, '.', '_' or '-'")
        return value
    if column == "patient" and not _PATIENT.match(value):
        raise CohortSheetError(f"{where}, column patient: at most 64 letters, digits, '.', '_' or '-'")
    return value


def parse_sheet(text: str, source: str = SHEET_NAME, columns: tuple[str, ...] = COLUMNS) -> CohortSheet:
    """Parse and validate a sheet's text (its case names are not checked against folders here);
    ``columns``: the ones allowed (:data:`COLUMNS` for photos, :data:`SLIDE_COLUMNS` for slides)."""
    if text.startswith("\ufeff"):
        text = text[1:]  # spreadsheet programs write a BOM
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise CohortSheetError(f"{source}: not valid CSV ({exc})") from None
    if not rows:
        raise CohortSheetError(f"{source}: empty; the first line must name the columns ({', '.join(columns)})")
    header = [h.strip() for h in rows[0]]
    unknown = [n for n, h in enumerate(header, start=1) if h not in columns]
    if unknown:
        # By position, not by name: a header cell is as free as any other and may hold a name.
        raise CohortSheetError(
            f"{source} line 1: column {unknown[0]} is not a known column; allowed columns: {', '.join(columns)}"
        )
    if len(set(header)) != len(header):
        raise CohortSheetError(f"{source} line 1: a column is named twice")
    if "case" not in header:
        raise CohortSheetError(f"{source} line 1: the column case is required")
    cases: dict[str, CaseAttributes] = {}
    for number, row in enumerate(rows[1:], start=2):
        where = f"{source} line {number}"
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise CohortSheetError(f"{where}: {len(row)} cells, the header has {len(header)}")
        values = {col: _cell(col, cell, where) for col, cell in zip(header, row, strict=True)}
        case = row[header.index("case")].strip()
        if not _CASE.match(case):
            raise CohortSheetError(
                f"{where}, column case: a case folder name (letters, digits, '.', '_', '-'; at most 128)"
            )
        if case in cases:
            raise CohortSheetError(f"{where}, column case: the case is listed twice")
        cases[case] = CaseAttributes(
            case=case,
            patient=values.get("patient", ""),
            modality=values.get("modality", "unknown") if values.get("modality", "unknown") != "unknown" else "XC",
            body_site=values.get("bodySite", "unknown"),
            skin_type=values.get("skinType", "unknown"),
            sex=values.get("sex", "unknown"),
            age_band=values.get("ageBand", "unknown"),
            laterality=values.get("laterality", ""),
            manufacturer=values.get("manufacturer", "unknown"),
            specimen_site=values.get("specimenSite", "unknown"),
            stain=values.get("stain", "unknown"),
        )
    return CohortSheet(cases)


def load_sheet(
    root: Path, case_folders: list[str] | None = None, columns: tuple[str, ...] = COLUMNS
) -> CohortSheet:
    """The sheet at ``root/cohort.csv`` (an empty sheet when there is none). With ``case_folders``,
    every row must name one of them and every folder must have a row."""
    path = Path(root) / SHEET_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise CohortSheetError(f"{SHEET_NAME}: must be a regular file")
    if not path.exists():
        return CohortSheet()
    data = path.read_bytes()
    if len(data) > MAX_SHEET_BYTES:
        raise CohortSheetError(f"{SHEET_NAME}: larger than {MAX_SHEET_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CohortSheetError(f"{SHEET_NAME}: not UTF-8 text") from None
    sheet = parse_sheet(text, columns=columns)
    if case_folders is not None:
        folders = set(case_folders)
        extra = sorted(set(sheet.cases) - folders)
        missing = sorted(folders - set(sheet.cases))
        if extra:
            raise CohortSheetError(f"{SHEET_NAME}: {len(extra)} row(s) name no case folder")
        if missing:
            raise CohortSheetError(f"{SHEET_NAME}: {len(missing)} case folder(s) have no row (every case needs one)")
    return sheet


def write_sheet(path: Path, cases: list[CaseAttributes], columns: tuple[str, ...] = COLUMNS) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for attrs in sorted(cases, key=lambda c: c.case):
        writer.writerow(attrs.row())
    Path(path).write_text(buf.getvalue(), encoding="utf-8")
