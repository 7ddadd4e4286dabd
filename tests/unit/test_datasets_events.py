"""The Events a Dataset's verification posts: counts a platform team can read, never values.

The end-to-end case runs the real verification step over a tree whose contents are counted by
construction (5 one-slice cases, 2 files with a planted name, 1 file that is not DICOM) and reads
its termination message the way the operator does; the Event text must carry those counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from lightbox.api.dataset import DatasetStatus
from lightbox.api.run import TERMINATION_LOG_ENV
from lightbox.operator import outcome, verifystep
from lightbox.operator.verify_events import (
    EVENT_MESSAGE_LIMIT,
    STARTED_REASON,
    finished_event,
    finished_message,
    started_message,
)
from lightbox.sandbox.sampledata import SAMPLE_DEID_OPTIONS, make_sample_dataset

PLANTED = "DOE^JANE"


def _verify(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> outcome.VerifyResult:
    """The verification step's summary as the operator reads it from the pod's termination message."""
    log = tmp_path / "termination-log"
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(log))
    argv = [str(studies)] + [arg for option in SAMPLE_DEID_OPTIONS for arg in ("--option", option)]
    code = verifystep.main(argv)
    state = {"exitCode": code, "message": log.read_text(), "reason": "Completed" if code == 0 else "Error"}
    pod = {"status": {"phase": "Succeeded" if code == 0 else "Failed",
                      "containerStatuses": [{"name": "verify", "state": {"terminated": state}}]}}
    job = {"status": {"conditions": [{"type": "Complete" if code == 0 else "Failed", "status": "True"}]}}
    result = outcome.verify_result(job, pod)
    assert result is not None
    return result


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    make_sample_dataset(tmp_path / "sample", n_cases=5, seed=3)  # classification: one file per case
    return tmp_path / "sample" / "studies"


def test_a_clean_tree_ends_with_its_counts(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    type_, reason, message = finished_event(_verify(studies, tmp_path, monkeypatch))
    assert (type_, reason) == ("Normal", "Verified")
    assert message == "verified de-identified: 5 cases, 5 files checked; none refused"


def test_a_refused_tree_names_each_reason_with_its_file_count_and_no_value(
    studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sorted(studies.rglob("*.dcm"))
    for planted in files[:2]:
        ds = pydicom.dcmread(planted)
        ds.PatientName = PLANTED
        ds.save_as(planted)
    (files[2].parent / "scan.dcm").write_bytes(b"not a DICOM file " * 20)

    type_, reason, message = finished_event(_verify(studies, tmp_path, monkeypatch))
    assert (type_, reason) == ("Warning", "PHIFound")
    assert message == (
        "rejected: identifying data found: 5 cases, 6 files checked; "
        "refused: PatientName (0010,0010) in 2 files, 1 file unreadable"
    )
    assert "DOE" not in message and "JANE" not in message and "scan.dcm" not in message


def _summary(**fields: object) -> dict[str, object]:
    return {"caseCount": 3, "fileCount": 7, "violations": [], **fields}


def test_the_message_fits_an_event_and_keeps_the_largest_reasons_first() -> None:
    # 200 attributes (outcome keeps at most 200), each with a long keyword: far over 1024 characters.
    violations = [
        {"keyword": f"Attribute{i:03d}" + "x" * 100, "tag": "(0009,1000)", "occurrences": 1, "files": i + 1}
        for i in range(200)
    ]
    message = finished_message("rejected", _summary(violations=violations, errors=4), verified=False)
    assert len(message) <= EVENT_MESSAGE_LIMIT
    assert message.startswith("rejected: 3 cases, 7 files checked; refused: Attribute199")
    assert "in 200 files" in message and "in 199 files" in message
    named = message.count("(0009,1000)")
    assert f"{200 - named} more attributes" in message
    assert message.endswith("4 files unreadable")


def test_counts_the_verifier_did_not_give_are_shown_as_unknown_not_zero() -> None:
    assert finished_message("verified de-identified", {}, verified=True) == (
        "verified de-identified: ? cases, ? files checked; none refused"
    )


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        (
            {"verified": False, "caseCount": "5", "fileCount": -1, "errors": 0,
             "violations": [{"keyword": "PatientName", "tag": "(0010,0010)", "files": True}]},
            "rejected: identifying data found: ? cases, ? files checked; refused: PatientName (0010,0010) in 0 files",
        ),
        (
            {"verified": False, "caseCount": 5, "fileCount": "many", "violations": "PatientName=DOE^JANE"},
            "rejected: identifying data found: 5 cases, ? files checked; refused, no reason counted by the verifier",
        ),
    ],
)
def test_a_malformed_summary_is_not_believed(hostile: dict[str, object], expected: str) -> None:
    """The verifier reads hostile files; its summary is data: wrong types are unknown, raw text never shown."""
    state = {"exitCode": 3, "message": json.dumps(hostile), "reason": "Error"}
    pod = {"status": {"phase": "Failed", "containerStatuses": [{"name": "verify", "state": {"terminated": state}}]}}
    result = outcome.verify_result({"status": {}}, pod)
    assert result is not None
    assert finished_event(result) == ("Warning", "PHIFound", expected)


def test_an_error_without_a_summary_says_why_and_counts_nothing() -> None:
    result = outcome.VerifyResult(False, "Error", "PodLost", "the verification pod ended without a result", {})
    assert finished_event(result) == ("Warning", "PodLost", "the verification pod ended without a result")


def test_the_start_names_the_job_and_what_the_last_verification_counted() -> None:
    first = started_message("chest-verify-1", "PVC imaging at chest/studies", None)
    assert first == (
        "verification Job chest-verify-1 started on PVC imaging at chest/studies; "
        "the number of cases and files is not known until it ends"
    )
    previous = DatasetStatus.model_validate({"phase": "Verified", "caseCount": 60, "fileCount": 1})
    again = started_message("chest-verify-2", "PVC imaging", previous)
    assert again == (
        "verification Job chest-verify-2 started on PVC imaging; the last verification checked 60 cases, 1 file"
    )
    assert STARTED_REASON == "VerificationStarted"
