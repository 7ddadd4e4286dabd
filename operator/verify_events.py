"""What a Dataset's Events say about its verification, from the verifier's checked summary.

A verification can take long over a large tree; a platform team reads `kubectl describe dataset`
to see it start and end. The text is built only from counts and attribute keywords already
checked and clipped by ``outcome`` (never values, never paths: the summary has none), and is kept
under the Event message limit by dropping detail, never by cutting a number in half.
"""

from __future__ import annotations

from typing import Any

from lightbox.api.dataset import DatasetStatus
from lightbox.operator.outcome import VerifyResult

#: post_event keeps the first 1024 characters; the text is fitted below that instead.
EVENT_MESSAGE_LIMIT = 1024
#: Attribute keywords named one by one before the rest are only counted.
NAMED_ATTRIBUTES = 10

STARTED_REASON = "VerificationStarted"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _count(summary: dict[str, Any], key: str, noun: str) -> str:
    value = summary.get(key)
    return _plural(value, noun) if isinstance(value, int) else f"? {noun}s"


def started_message(job_name: str, studies_path: str, previous: DatasetStatus | None) -> str:
    """The Job's start; the size comes from the last verification when there was one (the tree is
    counted by the Job itself, which reports only at its end)."""
    text = f"verification Job {job_name} started on {studies_path}"
    if previous is not None and previous.case_count is not None and previous.file_count is not None:
        cases, files = _plural(previous.case_count, "case"), _plural(previous.file_count, "file")
        return f"{text}; the last verification checked {cases}, {files}"
    return f"{text}; the number of cases and files is not known until it ends"


def _where(tag: str) -> str:
    """A DICOM tag comes as "(gggg,eeee)"; a photo's finding names where it was (EXIF, XMP)."""
    return tag if tag.startswith("(") else f"({tag})"


def _refusals(summary: dict[str, Any], limit: int) -> list[str]:
    """Why files were refused, most files first: an attribute keyword and its file count, or unreadable."""
    violations = sorted(summary.get("violations") or [], key=lambda v: (-v["files"], v["keyword"]))
    parts = [f"{v['keyword']} {_where(v['tag'])} in {_plural(v['files'], 'file')}" for v in violations[:limit]]
    if len(violations) > limit:
        parts.append(f"{_plural(len(violations) - limit, 'more attribute')}")
    errors = summary.get("errors")
    if isinstance(errors, int) and errors > 0:
        parts.append(f"{_plural(errors, 'file')} unreadable")
    return parts


def finished_message(verdict: str, summary: dict[str, Any], verified: bool) -> str:
    """The end of a verification with its counts: cases (study folders) and files checked, and what
    refused files, each reason with its file count."""
    checked = f"{_count(summary, 'caseCount', 'case')}, {_count(summary, 'fileCount', 'file')} checked"
    for limit in range(NAMED_ATTRIBUTES, -1, -1):
        refusals = _refusals(summary, limit)
        # A refusal without a counted reason is said as such, not as "none refused".
        outcome_text = "none refused" if verified else "refused, no reason counted by the verifier"
        text = f"{verdict}: {checked}; " + (f"refused: {', '.join(refusals)}" if refusals else outcome_text)
        if len(text) <= EVENT_MESSAGE_LIMIT:
            return text
    return f"{verdict}: {checked}; refused (see status.violations)"


def finished_event(result: VerifyResult) -> tuple[str, str, str]:
    """(type, reason, message) of the Event that ends a verification. Without a summary (the pod was
    lost, its deadline passed, its image could not be pulled) nothing was counted: the reason says why."""
    type_ = "Normal" if result.verified else "Warning"
    if not result.summary:
        return type_, result.reason, result.message
    verdict = {"Verified": "verified de-identified", "Rejected": "rejected: identifying data found"}.get(
        result.phase, result.message
    )
    return type_, result.reason, finished_message(verdict, result.summary, result.verified)
