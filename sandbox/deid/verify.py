"""The de-identification gate: does a tree conform to the profile (with options)?

A violation is an attribute present with a value the profile would have
removed, emptied or replaced. Replaced values are recognised by form, since the
key is not needed to check: UIDs under ``2.25.``, this tool's dummies and
patient pseudonyms. Cleaned (C) and kept (K) attributes cannot be judged and
pass. Reports carry attribute names, tags and counts, never values.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pydantic import Field

from lightbox.api.results import Model
from lightbox.sandbox.deid.attributes import (
    PATIENT_IDENTITY_REMOVED,
    PSEUDONYM_TAGS,
    STUDY_INSTANCE_UID,
    find_text,
    is_curve,
    is_overlay,
    text,
)
from lightbox.sandbox.deid.batch import _progress_bar, available_cores, iter_files, run_parallel
from lightbox.sandbox.deid.dicomio import DicomError, Element, dictionary_vr, parse_file, tag_text
from lightbox.sandbox.deid.profile import Profile, compile_profile
from lightbox.sandbox.deid.pseudonyms import PATIENT_PSEUDONYM, UID_ROOT
from lightbox.sandbox.deid.safe_private import SafePrivateList
from lightbox.sandbox.deid.slide_dicom import gate_finding as slide_gate_finding
from lightbox.sandbox.deid.slide_frames import gate_findings as frame_gate_findings
from lightbox.sandbox.deid.slide_sheet import SHEET_NAME, sheet_cohort
from lightbox.sandbox.deid.slide_sheet import gate_check as sheet_gate_check
from lightbox.sandbox.deid.slide_tiff import gate_check as slide_gate_check
from lightbox.sandbox.deid.slide_tiff import is_tiff_file
from lightbox.sandbox.deid.values import is_dummy, split_values

AGE_BANDS = ("0-17", "18-39", "40-59", "60-79", "80+")
COHORT_DIMENSIONS = ("sex", "ageBand", "manufacturer", "modality")


class Violation(Model):
    keyword: str = Field(description="Attribute keyword (or PrivateAttribute, CurveData, ...).")
    tag: str = Field(description='Tag as "(gggg,eeee)".')
    occurrences: int = Field(ge=0, description="Times the attribute was found with a non-conforming value.")
    files: int = Field(ge=0, description="Files it was found in.")


class VerificationReport(Model):
    """Result of checking a tree; safe to log or store (no values)."""

    ok: bool
    files: int = Field(ge=0, description="Files examined.")
    violations: list[Violation] = Field(default_factory=list)
    errors: int = Field(default=0, ge=0, description="Files that could not be read as DICOM.")
    content_hash: str = Field(description="sha256 over sorted (relative path, sha256 of file bytes) pairs.")
    cohort: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Studies per sex, ageBand, manufacturer and modality."
    )
    options: list[str] = Field(default_factory=list, description="Profile options checked against.")
    unreadable: list[str] = Field(
        default_factory=list, description="Relative path and reason per unreadable file (first 100)."
    )


@dataclass(frozen=True, slots=True)
class Checker:
    profile: Profile
    safe_private: SafePrivateList


@dataclass(slots=True)
class FileCheck:
    relative: str
    digest: bytes
    found: Counter[tuple[str, int]] = field(default_factory=Counter)
    error: str | None = None
    study: str = ""
    cohort: tuple[str, str, str, str] = ("unknown", "unknown", "unknown", "unknown")


def _keyword(tag: int, profile: Profile) -> str:
    from pydicom.datadict import keyword_for_tag

    rule = profile.rules.get(tag)
    keyword = keyword_for_tag(tag)
    if keyword:
        return keyword
    return "".join(ch for ch in rule.name.title() if ch.isalnum()) if rule else f"Attribute{tag:08X}"


def _replaced(e: Element, action: str) -> bool:
    """Whether a Z/D/U attribute's value is one this tool would have written."""
    if not e.value.strip(b" \0"):
        return True
    if e.tag in PSEUDONYM_TAGS and PATIENT_PSEUDONYM.match(text(e.value)):
        return True
    vr = dictionary_vr(e.tag) if e.vr == "UN" else e.vr  # the de-identifier wrote a dummy for the real VR
    if action == "U" or vr == "UI":
        return all(not v.strip(b" \0") or v.strip(b" \0").startswith(UID_ROOT.encode()) for v in split_values(e.value))
    return action == "D" and is_dummy(vr, e.value)


def _check_private(elements: list[Element], checker: Checker, found: Counter[tuple[str, int]]) -> None:
    keep_safe = checker.profile.private_action == "C"
    creators: dict[tuple[int, int], str] = {}
    for e in elements:
        group, elem = e.tag >> 16, e.tag & 0xFFFF
        if not group & 1:
            continue
        if 0x0010 <= elem <= 0x00FF and e.items is None:
            creators[(group, elem)] = text(e.value)
            if keep_safe and any(
                c == creators[(group, elem)] and g == group for c, g, _ in checker.safe_private.entries
            ):
                continue
            found[("PrivateCreator", e.tag)] += 1
        elif elem >= 0x1000:
            creator = creators.get((group, elem >> 8))
            if keep_safe and creator is not None and checker.safe_private.allows(creator, group, elem):
                if e.items is not None:
                    for item in e.items:
                        _check(item, checker, found)
                continue
            found[("PrivateAttribute", e.tag)] += 1
        else:
            found[("PrivateAttribute", e.tag)] += 1


def _check(elements: list[Element], checker: Checker, found: Counter[tuple[str, int]]) -> None:
    profile = checker.profile
    has_private = False
    for e in elements:
        tag = e.tag
        group = tag >> 16
        if group & 1:
            has_private = True
            continue
        if tag & 0xFFFF == 0 or e.span is not None:
            continue
        empty = not e.items if e.items is not None else not e.value.strip(b" \0")
        if is_curve(group):
            if profile.curve_action == "X" and not empty:
                found[("CurveData", tag)] += 1
            continue
        if is_overlay(group) and tag & 0xFFFF in (0x3000, 0x4000):
            if profile.overlay_action == "X" and not empty:
                found[("OverlayData" if tag & 0xFFFF == 0x3000 else "OverlayComments", tag)] += 1
            continue
        rule = profile.rules.get(tag)
        action = rule.action if rule is not None else None
        if e.items is not None:
            if action in (None, "K", "C", "U*"):
                for item in e.items:
                    _check(item, checker, found)
            elif action == "X" or (action == "Z" and e.items) or (action == "D" and any(e.items)):
                found[(_keyword(tag, profile), tag)] += 1
            continue
        if action in (None, "K", "C") or empty:
            continue
        if action == "X" or not _replaced(e, "U" if action == "U*" else action):
            found[(_keyword(tag, profile), tag)] += 1
    if has_private:
        _check_private(elements, checker, found)


def age_band(age: str) -> str:
    age = age.strip().upper()
    if len(age) != 4 or not age[:3].isdigit() or age[3] not in "DWMY":
        return "unknown"
    years = int(age[:3]) / {"D": 365.25, "W": 52.18, "M": 12, "Y": 1}[age[3]]
    for limit, band in ((18, "0-17"), (40, "18-39"), (60, "40-59"), (80, "60-79")):
        if years < limit:
            return band
    return "80+"


def _cohort(elements: list[Element]) -> tuple[str, str, str, str]:
    sex = find_text(elements, 0x00100040).upper()
    return (
        sex if sex in ("M", "F", "O") else "unknown",
        age_band(find_text(elements, 0x00101010)),
        find_text(elements, 0x00080070) or "unknown",
        find_text(elements, 0x00080060).upper() or "unknown",
    )


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.digest()


def check_file(path: Path, root: Path, checker: Checker) -> FileCheck:
    relative = path.relative_to(root).as_posix() if path != root else path.name
    try:
        digest = _file_digest(path)
    except OSError as exc:
        return FileCheck(relative, b"", error=f"unreadable: {exc.strerror}")
    result = FileCheck(relative, digest)
    if relative == SHEET_NAME and path.parent == root:
        return _check_sheet(result, root)
    if is_tiff_file(path):
        return _check_slide_file(result, path)
    try:
        parsed = parse_file(path)
    except (DicomError, OSError, ValueError) as exc:
        result.error = str(exc)
        return result
    elements = parsed.elements
    _check(elements, checker, result.found)
    if (slide := slide_gate_finding(elements)) is not None:
        result.found[slide] += 1
    result.found.update(frame_gate_findings(parsed))
    if find_text(elements, PATIENT_IDENTITY_REMOVED).upper() != "YES":
        result.found[("PatientIdentityRemoved", PATIENT_IDENTITY_REMOVED)] += 1
    result.study = find_text(elements, STUDY_INSTANCE_UID) or relative
    result.cohort = _cohort(elements)
    return result


def _check_slide_file(result: FileCheck, path: Path) -> FileCheck:
    """A whole-slide TIFF: its removed parts, tags and description fields (slide_tiff); the
    case is its folder, the cohort's modality SM and manufacturer the scanner's maker."""
    found, result.error, manufacturer = slide_gate_check(path)
    result.found.update(found)  # type: ignore[arg-type]  # TIFF findings are named "TIFF <code>"
    result.study = str(Path(result.relative).parent)
    result.cohort = ("unknown", "unknown", manufacturer, "SM")
    return result


def _check_sheet(result: FileCheck, root: Path) -> FileCheck:
    """A slide dataset's cohort sheet (slide_sheet): not a study; its patient column must hold
    pseudonyms and it must validate against the case folders."""
    found, result.error = sheet_gate_check(root)
    result.found.update(found)  # type: ignore[arg-type]  # named by the sheet's column, not a tag
    result.study = ""
    return result


def _check_chunk(root: Path, checker: Checker, chunk: list[Path]) -> list[FileCheck]:
    return [check_file(path, root, checker) for path in chunk]


def _tag_order(tag: int | str) -> str:
    """DICOM tags in numeric order, then slide (TIFF) findings, which are named by text."""
    return f"~{tag}" if isinstance(tag, str) else f"{tag:08X}"


def verify_file(
    path: Path, options: Iterable[str] = (), *, safe_private: SafePrivateList | None = None
) -> VerificationReport:
    """:func:`verify_tree` for a single file (its content hash covers that file alone)."""
    return verify_tree(path, options, jobs=1, safe_private=safe_private)


def verify_tree(
    root: Path,
    options: Iterable[str] = (),
    *,
    jobs: int | None = None,
    safe_private: SafePrivateList | None = None,
    progress: bool = False,
) -> VerificationReport:
    """Check every file under ``root`` against the profile with ``options``.

    ``progress``: a bar on stderr (files checked, of how many, files per second).
    """
    root = Path(root)
    profile = compile_profile(options)
    checker = Checker(profile, safe_private if safe_private is not None else SafePrivateList.load())
    paths = iter_files(root)
    base = root if root.is_dir() else root.parent
    checks: list[FileCheck] = []
    with _progress_bar(len(paths), progress, "deid verify") as bar:
        for chunk in run_parallel(partial(_check_chunk, base, checker), paths, jobs or available_cores()):
            checks.extend(chunk)
            bar.update(len(chunk))
    checks.sort(key=lambda c: c.relative)

    occurrences: Counter[tuple[str, int]] = Counter()
    files: Counter[tuple[str, int]] = Counter()
    studies: dict[str, tuple[str, str, str, str]] = {}
    tree_hash = hashlib.sha256()
    for check in checks:
        tree_hash.update(check.relative.encode("utf-8", "surrogateescape") + b"\0" + check.digest)
        occurrences.update(check.found)
        files.update(check.found.keys())
        if check.error is None and check.study:  # the cohort sheet is no study
            studies.setdefault(check.study, check.cohort)
    cohort: dict[str, dict[str, int]] = {}
    for i, dimension in enumerate(COHORT_DIMENSIONS):
        cohort[dimension] = dict(sorted(Counter(values[i] for values in studies.values()).items()))
    if root.is_dir() and (root / SHEET_NAME).is_file():
        cohort.update(sheet_cohort(root))  # the site's own word on sex, age band, specimen site and stain
    violations = [
        Violation(
            keyword=keyword,
            tag=tag if isinstance(tag, str) else tag_text(tag),
            occurrences=n,
            files=files[(keyword, tag)],
        )
        for (keyword, tag), n in sorted(occurrences.items(), key=lambda kv: (_tag_order(kv[0][1]), kv[0][0]))
    ]
    errors = sum(1 for c in checks if c.error is not None)
    return VerificationReport(
        ok=not violations and errors == 0,
        files=len(checks),
        violations=violations,
        errors=errors,
        content_hash=tree_hash.hexdigest(),
        cohort=cohort,
        options=sorted(profile.options),
        unreadable=[f"{c.relative}: {c.error}" for c in checks if c.error is not None][:100],
    )
