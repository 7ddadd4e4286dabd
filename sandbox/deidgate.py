"""The de-identification gate the stager calls.

The real check lives in ``lightbox.sandbox.deid`` (PS3.15 Annex E with options). Until that
package exports ``verify_tree``, a minimal check with the same report shape stands in, so the
stager never stages unchecked data. Reports carry keywords, tags and counts, never values.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightbox.sandbox.deid.verify import age_band

AGE_BANDS = ("0-17", "18-39", "40-59", "60-79", "80+")


@dataclass(frozen=True)
class Violation:
    keyword: str
    tag: str
    occurrences: int
    files: int


@dataclass
class VerificationReport:
    ok: bool
    files: int
    violations: list[Violation] = field(default_factory=list)
    errors: int = 0
    content_hash: str = ""
    cohort: dict[str, dict[str, int]] = field(default_factory=dict)


# Attributes that must be absent or empty in a de-identified file, with the option that
# allows keeping them. A deliberately small subset of Table E.1-1: the fallback only has to
# catch data that was obviously never de-identified.
_MUST_BE_EMPTY: dict[str, tuple[int, str | None]] = {
    "PatientName": (0x00100010, None),
    "PatientBirthDate": (0x00100030, None),
    "OtherPatientIDs": (0x00101000, None),
    "OtherPatientIDsSequence": (0x00101002, None),
    "PatientAddress": (0x00101040, None),
    "PatientTelephoneNumbers": (0x00102154, None),
    "ReferringPhysicianName": (0x00080090, None),
    "InstitutionName": (0x00080080, "retainInstitutionIdentity"),
    "InstitutionAddress": (0x00080081, "retainInstitutionIdentity"),
    "AccessionNumber": (0x00080050, None),
}


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def minimal_verify_tree(root: Path, options: Iterable[str] = ()) -> VerificationReport:
    import pydicom
    from pydicom.errors import InvalidDicomError

    allowed = set(options)
    occurrences: Counter[str] = Counter()
    in_files: Counter[str] = Counter()
    errors = 0
    paths = sorted(p for p in Path(root).rglob("*") if p.is_file())
    tree_hash = hashlib.sha256()
    cohort: dict[str, Counter[str]] = {d: Counter() for d in ("sex", "ageBand", "manufacturer", "modality")}
    studies: set[str] = set()
    for path in paths:
        tree_hash.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            errors += 1
            continue
        found: set[str] = set()
        for keyword, (tag, option) in _MUST_BE_EMPTY.items():
            if option in allowed:
                continue
            elem = ds.get(tag)
            if elem is not None and not _is_empty(elem.value):
                occurrences[keyword] += 1
                found.add(keyword)
        if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
            occurrences["PatientIdentityRemoved"] += 1
            found.add("PatientIdentityRemoved")
        if "retainSafePrivate" not in allowed and any(e.tag.is_private for e in ds):
            occurrences["PrivateAttribute"] += 1
            found.add("PrivateAttribute")
        in_files.update(found)
        study = str(ds.get("StudyInstanceUID", path.parent.name))
        if study not in studies:
            studies.add(study)
            sex = str(ds.get("PatientSex", "")).upper()
            cohort["sex"][sex if sex in ("M", "F", "O") else "unknown"] += 1
            cohort["ageBand"][age_band(str(ds.get("PatientAge", "")))] += 1
            cohort["manufacturer"][str(ds.get("Manufacturer", "")) or "unknown"] += 1
            cohort["modality"][str(ds.get("Modality", "")).upper() or "unknown"] += 1
    tags = {**{k: _tag_text(t) for k, (t, _) in _MUST_BE_EMPTY.items()}, "PatientIdentityRemoved": "(0012,0062)", "PrivateAttribute": "(gggg,eeee)"}
    violations = [Violation(k, tags[k], occurrences[k], in_files[k]) for k in sorted(occurrences)]
    return VerificationReport(
        ok=not violations and errors == 0,
        files=len(paths),
        violations=violations,
        errors=errors,
        content_hash=tree_hash.hexdigest(),
        cohort={d: dict(c) for d, c in cohort.items()},
    )


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (bytes, str)):
        return not value.strip(b" \0" if isinstance(value, bytes) else " \0")
    try:
        return len(value) == 0
    except TypeError:
        return False


class VerifierUnavailable(RuntimeError):
    """The deid package declares a verifier but it cannot be loaded: fail closed."""


def load_verifier() -> tuple[Callable[..., Any], str]:
    """The deid package's verifier when it provides one, else the minimal one; and which.

    Falls back only when the package does not offer ``verify_tree`` at all. If it offers one
    that fails to import, staging must stop rather than silently use the weaker check.
    """
    import lightbox.sandbox.deid as deid

    try:
        return getattr(deid, "verify_tree"), "deid"
    except AttributeError:
        return minimal_verify_tree, "minimal"
    except ImportError as exc:
        raise VerifierUnavailable(f"the de-identification verifier failed to load: {exc}") from exc


def verify_tree(root: Path, options: Iterable[str] = ()) -> Any:
    verifier, _ = load_verifier()
    return verifier(Path(root), list(options))


def error_count(report: Any) -> int:
    """The deid package reports errors as a count; accept a list too."""
    errors = getattr(report, "errors", 0)
    return len(errors) if isinstance(errors, (list, tuple)) else int(errors or 0)
