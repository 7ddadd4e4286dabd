"""The dataset-verification step (trusted image): ``python -m lightbox.operator.verifystep DIR``.

Wraps the de-identification gate (``lightbox.sandbox.deidgate.verify_tree``:
the check of ``lightbox deid verify``, as the stager applies it) and writes a compact summary to
the termination log, the one channel a Job's pod has back to the operator.
The full report can exceed the 4096 bytes Kubernetes keeps, so violations are
capped and the per-file list of unreadable files is left out.

Exit 0 when the tree conforms, 3 when identifying data was found, 4 when it
cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightbox.api.results import TERMINATION_MESSAGE_LIMIT
from lightbox.api.run import EXIT_DATASET_UNREADABLE, EXIT_PHI_FOUND, TERMINATION_LOG_ENV, TERMINATION_LOG_PATH


def compact_summary(report: Any, case_count: int, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    summary: dict[str, Any] = {
        "verified": bool(report.ok),
        "contentHash": report.content_hash,
        "caseCount": case_count,
        "fileCount": report.files,
        "errors": getattr(report, "errors", 0),
        "cohort": getattr(report, "cohort", {}) or {},
        "violations": [
            {"keyword": v.keyword, "tag": v.tag, "occurrences": v.occurrences, "files": v.files}
            for v in report.violations
        ],
    }
    text = json.dumps(summary, separators=(",", ":"))
    # Drop detail, least important first, until it fits the termination message.
    while len(text.encode()) > limit and summary["violations"]:
        summary["violations"] = summary["violations"][: len(summary["violations"]) // 2]
        text = json.dumps(summary, separators=(",", ":"))
    if len(text.encode()) > limit:
        summary["cohort"] = {}
        text = json.dumps(summary, separators=(",", ":"))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightbox.operator.verifystep")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--option", action="append", default=[], help="profile option the dataset claims")
    parser.add_argument(
        "--format", choices=("dicom", "slide-tiff", "photo"), default="dicom", help="the Dataset's format"
    )
    args = parser.parse_args(argv)
    # The same gate the stager applies before every run.
    from lightbox.sandbox.deidgate import verify_tree

    gate: Callable[..., Any] = verify_tree
    if args.format == "photo":  # photos and their cohort sheet have their own gate
        from lightbox.sandbox.deid.photos_verify import verify_photo_tree

        gate = verify_photo_tree

    target = os.environ.get(TERMINATION_LOG_ENV) or TERMINATION_LOG_PATH
    report = None
    if not args.dir.is_dir():
        text = json.dumps({"verified": False, "message": f"{args.dir} is not a directory"})
        code = EXIT_DATASET_UNREADABLE
    else:
        try:
            report = gate(args.dir, args.option)
        except Exception as exc:  # noqa: BLE001  (fail closed, but say why)
            text = json.dumps({"verified": False, "message": f"verifier failed: {type(exc).__name__}: {exc}"[:2000]})
            code = EXIT_DATASET_UNREADABLE
    if report is not None:
        cases = sum(1 for p in args.dir.iterdir() if p.is_dir())
        text = compact_summary(report, cases)
        code = 0 if report.ok else EXIT_PHI_FOUND
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError:
        pass  # outside a pod: stdout carries it
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
