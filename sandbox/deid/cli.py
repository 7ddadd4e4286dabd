"""``lightbox deid SRC DST`` and ``lightbox deid verify DIR``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lightbox.sandbox.deid.profile import OPTIONS

KEY_FILE_ENV = "LIGHTBOX_DEID_KEY_FILE"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def _options(values: list[str]) -> list[str]:
    return [o for v in values for o in v.split(",") if o]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="NAME",
        help=f"profile option (repeatable or comma-separated): {', '.join(OPTIONS)}",
    )
    parser.add_argument("-j", "--jobs", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--safe-private", type=Path, default=None, help="JSON safelist replacing the packaged one")
    parser.add_argument(
        "--format", choices=("dicom", "slide-tiff", "photo"), default="dicom",
        help="the Dataset's format: photo is one folder per case of JPEG/PNG/HEIC (+ cohort.csv); "
        "dicom and slide-tiff take the DICOM/TIFF path (slide-tiff: + cohort.csv with specimenSite, stain)",
    )


def _deid_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightbox deid",
        description="De-identify DICOM with the PS3.15 Annex E Basic Application Level Confidentiality Profile; "
        "whole-slide TIFF/SVS files (recognised by content) lose their label, macro, identifying description "
        "and tags (docs/deid.md).",
        epilog="lightbox deid verify DIR [--option ...]  checks a tree instead.",
    )
    p.add_argument("src", type=Path, help="file or folder to de-identify")
    p.add_argument("dst", type=Path, help="output folder (<patient>/<study>/<instance>.dcm, hashed names)")
    p.add_argument(
        "--key-file", type=Path, default=os.environ.get(KEY_FILE_ENV), help=f"secret key (env {KEY_FILE_ENV})"
    )
    p.add_argument(
        "--allow-burned-in", action="store_true", help="do not quarantine files that may have burned-in text"
    )
    p.add_argument("--quarantine", type=Path, default=None, help="folder for refused files (default: DST-quarantine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(p)
    return p


def _verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightbox deid verify",
        description="Report attributes that violate the profile (names, tags and counts; never values).",
    )
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true", help="print the VerificationReport as JSON")
    p.add_argument("-q", "--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
    _add_common(p)
    return p


def _safelist(path: Path | None):
    from lightbox.sandbox.deid.safe_private import SafePrivateList

    return SafePrivateList.load(path)


def _verify(argv: list[str]) -> int:
    args = _verify_parser().parse_args(argv)
    from lightbox.sandbox.deid.verify import verify_tree

    if not args.dir.exists():
        print(f"lightbox deid verify: {args.dir} does not exist", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "photo":
        from lightbox.sandbox.deid.photos_verify import verify_photo_tree as verify_tree  # noqa: F811
    try:
        report = verify_tree(args.dir, _options(args.option), jobs=args.jobs, safe_private=_safelist(args.safe_private),
                             progress=not args.quiet and sys.stderr.isatty())
    except ValueError as exc:
        print(f"lightbox deid verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(report.model_dump_json(by_alias=True, indent=2))
    else:
        for v in report.violations:
            print(f"{v.tag} {v.keyword}: {v.occurrences} occurrence(s) in {v.files} file(s)")
        for line in report.unreadable:
            print(f"unreadable {line}")
        verdict = "OK" if report.ok else "VIOLATIONS FOUND"
        print(
            f"{verdict}: {report.files} file(s), {len(report.violations)} attribute(s) in violation, "
            f"{report.errors} unreadable; content sha256 {report.content_hash}"
        )
    return EXIT_OK if report.ok else EXIT_REFUSED


def _deid(argv: list[str]) -> int:
    args = _deid_parser().parse_args(argv)
    from lightbox.sandbox.deid.batch import deidentify_tree
    from lightbox.sandbox.deid.pseudonyms import KeyFileError, load_key

    if args.key_file is None:
        print(f"lightbox deid: a secret key is required: --key-file FILE or ${KEY_FILE_ENV}", file=sys.stderr)
        return EXIT_USAGE
    if not args.src.exists():
        print(f"lightbox deid: {args.src} does not exist", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "photo":
        return _deid_photos(args, load_key, KeyFileError)
    from lightbox.sandbox.cohortsheet import SHEET_NAME, CohortSheetError
    from lightbox.sandbox.deid import slide_sheet

    try:
        # a slide dataset's sheet is validated before any slide is read (slide_sheet.py)
        sheet = slide_sheet.read_source_sheet(args.src) if args.format == "slide-tiff" else None
    except CohortSheetError as exc:
        print(f"lightbox deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        key = load_key(args.key_file)
        summary = deidentify_tree(
            args.src,
            args.dst,
            key=key,
            options=_options(args.option),
            jobs=args.jobs,
            allow_burned_in=args.allow_burned_in,
            quarantine_root=args.quarantine,
            safe_private=_safelist(args.safe_private),
            progress=not args.no_progress and sys.stderr.isatty(),
            exclude=frozenset({str(Path(args.src) / SHEET_NAME)}) if sheet is not None else frozenset(),
        )
        if sheet is not None:
            slide_sheet.write_output_sheet(args.src, args.dst, sheet, key)
    except (KeyFileError, ValueError) as exc:
        print(f"lightbox deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for source, reason in summary.refused:
        print(f"refused {source}: {reason}", file=sys.stderr)
    for part, n in sorted(summary.removed.items()):
        print(f"removed {n} {part}(s)", file=sys.stderr)
    removed_files = sum(n for part, n in summary.removed.items() if not part.endswith(" page"))
    print(
        f"{summary.files} file(s): {summary.written} written, {summary.quarantined} quarantined, "
        f"{summary.errors} error(s), {summary.skipped} skipped, {removed_files} removed (slide labels/overviews)",
        file=sys.stderr,
    )
    return EXIT_OK if summary.ok else EXIT_REFUSED


def _deid_photos(args: argparse.Namespace, load_key, key_error) -> int:
    from lightbox.sandbox.cohortsheet import CohortSheetError
    from lightbox.sandbox.deid.photos_tree import deidentify_photo_tree

    try:
        summary = deidentify_photo_tree(
            args.src, args.dst, key=load_key(args.key_file), jobs=args.jobs,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except (key_error, CohortSheetError, NotADirectoryError) as exc:
        print(f"lightbox deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for source, reason in summary.refused:
        print(f"refused {source}: {reason}", file=sys.stderr)
    print(f"{summary.files} photo(s): {summary.written} written, {summary.errors} refused", file=sys.stderr)
    return EXIT_OK if summary.ok else EXIT_REFUSED


def main(argv: list[str]) -> int:
    if argv and argv[0] == "verify":
        return _verify(argv[1:])
    return _deid(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
