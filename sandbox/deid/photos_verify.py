"""The PHI gate for photo datasets (``Dataset.spec.format: photo``).

A conforming photo holds nothing but what :mod:`photos` keeps: the decoding segments or
chunks, a JFIF header without thumbnail, an Adobe colour-transform marker, an ICC profile
without date or device text, and at most an EXIF block with Orientation alone. Anything
else is a violation, reported as (keyword, location, occurrences, files), never a value:
GPSInfo at "EXIF 0x8825", Thumbnail at "EXIF IFD1", XMP at "JPEG APP1", a PNG text chunk...
A HEIC file is a violation as such: its metadata items are not checked here, and
``lightbox deid`` turns HEIC into PNG. A file that does not parse is an error (the reason is
listed), and so is a cohort sheet that does not validate.

The content hash is the DICOM gate's: sha256 over the sorted relative paths, each with the
sha256 of the file's bytes (cohort.csv included, so changing a skin type changes it).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from lightbox.sandbox.cohortsheet import COHORT_DIMENSIONS, SHEET_NAME, CohortSheetError, load_sheet
from lightbox.sandbox.deid.batch import _progress_bar, available_cores, run_parallel
from lightbox.sandbox.deid.photos import (
    _JPEG_KEPT,
    _PNG_KEPT,
    ADOBE,
    EXIF_HEADER,
    ICC_APP2,
    JFIF,
    jpeg_block_keyword,
    minimal_exif,
    png_chunk_keyword,
    read_exif,
)
from lightbox.sandbox.deid.photos_parse import (
    PhotoError,
    icc_findings,
    marker_name,
    parse_jpeg,
    parse_png,
    sniff,
)
from lightbox.sandbox.deid.pseudonyms import PATIENT_PSEUDONYM
from lightbox.sandbox.deid.verify import VerificationReport, Violation

Finding = tuple[str, str]  # (keyword, location)


@dataclass(slots=True)
class PhotoCheck:
    relative: str
    digest: bytes
    found: Counter[Finding] = field(default_factory=Counter)
    error: str | None = None


def _exif_findings(block: bytes, where: str) -> Counter[Finding]:
    """Only the exact block the de-identifier writes passes: Orientation alone. Anything else
    is named by its tags, or as a whole when its tags are all harmless but the bytes differ
    (a block can hide data between or after its IFDs)."""
    exif = read_exif(block)
    found = Counter(exif.findings)
    if not found and block != minimal_exif(exif.orientation):
        found[("ExifBlock", where)] += 1
    return found


def _jpeg_findings(data: bytes) -> Counter[Finding]:
    layout = parse_jpeg(data)
    found: Counter[Finding] = Counter()
    icc: list[bytes] = []
    for seg in layout.segments:
        m, p = seg.marker, seg.payload
        where = f"JPEG {marker_name(m)}"
        if m in _JPEG_KEPT:
            continue
        if m == 0xE0 and p.startswith(JFIF):
            if len(p) != 14 or p[12:14] != b"\x00\x00":
                found[("JFIFThumbnail", where)] += 1
        elif m == 0xEE and p.startswith(ADOBE) and len(p) == 12:
            continue
        elif m == 0xE1 and p.startswith(EXIF_HEADER):
            found.update(_exif_findings(p, where))
        elif m == 0xE2 and p.startswith(ICC_APP2):
            icc.append(p[len(ICC_APP2) + 2 :])
        else:
            found[(jpeg_block_keyword(seg), where)] += 1
    if icc:
        found.update((keyword, f"JPEG APP2 ICC {detail}") for keyword, detail in icc_findings(b"".join(icc)))
    if layout.trailing:
        found[("DataAfterEOI", "JPEG EOI")] += 1
    return found


def _png_findings(data: bytes) -> Counter[Finding]:
    import zlib

    layout = parse_png(data)
    found: Counter[Finding] = Counter()
    for chunk in layout.chunks:
        where = f"PNG {chunk.name}"
        if chunk.type in _PNG_KEPT:
            continue
        if chunk.type == b"eXIf":
            found.update(_exif_findings(EXIF_HEADER + chunk.data, where))
        elif chunk.type == b"iCCP":
            name, _, rest = chunk.data.partition(b"\x00")
            if name != b"ICC profile":
                found[("ICCProfileName", where)] += 1
            try:
                profile = zlib.decompress(rest[1:])
            except zlib.error:
                raise PhotoError("PNG: iCCP profile does not decompress") from None
            found.update((keyword, f"{where} {detail}") for keyword, detail in icc_findings(profile))
        else:
            found[(png_chunk_keyword(chunk.type, chunk.data), where)] += 1
    if layout.trailing:
        found[("DataAfterIEND", "PNG IEND")] += 1
    return found


def photo_findings(data: bytes) -> Counter[Finding]:
    """What in this photo the profile does not allow; raises PhotoError when it does not parse."""
    kind = sniff(data)
    if kind == "jpeg":
        return _jpeg_findings(data)
    if kind == "png":
        return _png_findings(data)
    if kind == "heic":
        return Counter({("HEICContainer", "HEIC"): 1})
    raise PhotoError("not a JPEG, PNG or HEIC photo (by its content)")


def check_photo_file(path: Path, root: Path) -> PhotoCheck:
    relative = path.relative_to(root).as_posix()
    if path.is_symlink():
        return PhotoCheck(relative, b"", error="a symbolic link (not followed)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return PhotoCheck(relative, b"", error=f"unreadable: {exc.strerror}")
    check = PhotoCheck(relative, hashlib.sha256(data).digest())
    if relative == SHEET_NAME:
        return check
    if "/" not in relative:
        check.error = "a photo outside a case folder (one folder per case)"
        return check
    try:
        check.found = photo_findings(data)
    except PhotoError as exc:
        check.error = exc.reason
    return check


def _photo_paths(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _check_chunk(root: Path, paths: list[Path]) -> list[PhotoCheck]:
    return [check_photo_file(p, root) for p in paths]


def verify_photo_tree(
    root: Path,
    options: Iterable[str] = (),
    *,
    jobs: int | None = None,
    safe_private: object = None,
    progress: bool = False,
) -> VerificationReport:
    """The gate's report for a photo dataset. The keywords match :func:`verify_tree`'s so callers
    can swap them: ``options`` are recorded only and ``safe_private`` is unused (a photo has no
    private DICOM attributes)."""
    root = Path(root)
    paths = _photo_paths(root)
    checks: list[PhotoCheck] = []
    with _progress_bar(len(paths), progress, "deid verify") as bar:
        for chunk in run_parallel(partial(_check_chunk, root), paths, jobs or available_cores()):
            checks.extend(chunk)
            bar.update(len(chunk))
    folders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    sheet_error: str | None = None
    cohort: dict[str, dict[str, int]] = {}
    try:
        sheet = load_sheet(root, folders)
    except CohortSheetError as exc:
        sheet_error = str(exc)
    else:
        counts: dict[str, Counter[str]] = {d: Counter() for d in COHORT_DIMENSIONS}
        for case in folders:
            for dim, value in sheet.get(case).cohort().items():
                counts[dim][value] += 1
        cohort = {d: dict(sorted(c.items())) for d, c in counts.items()}
        named = sum(1 for a in sheet.cases.values() if a.patient and not PATIENT_PSEUDONYM.match(a.patient))
        if named:  # one file (the sheet), as many occurrences as rows
            checks.append(PhotoCheck(SHEET_NAME, b"", Counter({("PatientID", f"{SHEET_NAME} patient"): named})))
    tree_hash = hashlib.sha256()
    occurrences: Counter[Finding] = Counter()
    files: Counter[Finding] = Counter()
    for check in sorted(checks, key=lambda c: c.relative):
        if check.digest:
            tree_hash.update(check.relative.encode("utf-8", "surrogateescape") + b"\0" + check.digest)
        occurrences.update(check.found)
        files.update(check.found.keys())
    unreadable = [f"{c.relative}: {c.error}" for c in checks if c.error is not None]
    if sheet_error is not None:
        unreadable.insert(0, sheet_error)
    violations = [
        Violation(keyword=keyword, tag=where, occurrences=n, files=files[(keyword, where)])
        for (keyword, where), n in sorted(occurrences.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    return VerificationReport(
        ok=not violations and not unreadable,
        files=sum(1 for c in checks if c.digest or c.error),
        violations=violations,
        errors=len(unreadable),
        content_hash=tree_hash.hexdigest(),
        cohort=cohort,
        options=sorted(set(options)),
        unreadable=unreadable[:100],
    )
