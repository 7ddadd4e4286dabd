"""Run, probe and verification outcomes compared whole: phase, reason, message, exit code.

The reason and message are what operators read in status.runs[], Events and the
lightbox_runs_total{reason} metric, so their exact text is behaviour. Exit codes are the
steps' documented ones (lightbox/api/run.py: 3 PHI found, 4 studies unreadable, 5 malformed
predictions, 6 ground truth unreadable, 7 dataset changed, 8 isolation not enforced).
"""

from __future__ import annotations

import json

import pytest

from lightbox.api.results import MetricValue, ScoreReport
from lightbox.operator import outcome
from lightbox.operator.outcome import Outcome, ProbeResult, VerifyResult


def terminated(name, code=0, message="", reason=None):
    state = {"exitCode": code, "message": message}
    if reason:
        state["reason"] = reason
    return {"name": name, "state": {"terminated": state}, "image": f"img/{name}"}


def pod(phase, init=(), main=(), reason=None, message=None, deadline=600):
    status = {"phase": phase, "initContainerStatuses": list(init), "containerStatuses": list(main)}
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return {"spec": {"activeDeadlineSeconds": deadline}, "status": status}


def job(condition=None, reason="", message="", deadline=1200):
    cond = {
        "type": condition,
        "status": "True",
        **({"reason": reason} if reason else {}),
        **({"message": message} if message else {}),
    }
    conditions = [cond] if condition else []
    return {"spec": {"activeDeadlineSeconds": deadline}, "status": {"conditions": conditions}}


OK = [terminated("stage"), terminated("vendor")]
REPORT = ScoreReport(
    task="classification", cases=10, scored=9, metrics={"auc": MetricValue(value=0.9, lower=0.8, upper=0.97)}
)


def step_message(text):
    return json.dumps({"reason": "X", "message": text})


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (
            [terminated("stage", 3, reason="OOMKilled")],
            Outcome("Failed", "OOMKilled", "the staging step ran out of memory", exit_code=3),
        ),
        (
            [terminated("stage", 3)],
            Outcome("Failed", "PHIFound", "staging found identifying data in the studies", exit_code=3),
        ),
        (
            [terminated("stage", 3, step_message("PatientName in 2 files"))],
            Outcome("Failed", "PHIFound", "PatientName in 2 files", exit_code=3),
        ),
        (
            [terminated("stage", 4)],
            Outcome("Failed", "DatasetUnreadable", "staging could not read the studies", exit_code=4),
        ),
        (
            [terminated("stage", 4, step_message("2 of 9 files"))],
            Outcome("Failed", "DatasetUnreadable", "2 of 9 files", exit_code=4),
        ),
        (
            [terminated("stage", 8)],
            Outcome(
                "Failed",
                "IsolationNotEnforced",
                "the network answered from inside the run pod; the vendor container was not started",
                exit_code=8,
            ),
        ),
        (
            [terminated("stage", 7)],
            Outcome("Failed", "DatasetChanged", "the studies changed since the Dataset was verified", exit_code=7),
        ),
        (
            [terminated("stage", 7, step_message("hash a, now b"))],
            Outcome("Failed", "DatasetChanged", "hash a, now b", exit_code=7),
        ),
        (
            [terminated("stage", 9)],
            Outcome("Failed", "StageFailed", "the staging step exited with code 9", exit_code=9),
        ),
        (
            [terminated("stage"), terminated("vendor", 137, reason="OOMKilled")],
            Outcome("Failed", "OOMKilled", "the vendor container exceeded its memory limit", exit_code=137),
        ),
        (
            [terminated("stage"), terminated("vendor", 2, "hostile text")],
            Outcome("Failed", "VendorExitCode", "the vendor container exited with code 2", exit_code=2),
        ),
    ],
)
def test_stage_and_vendor_endings(statuses, expected):
    assert outcome.run_outcome(job("Failed"), pod("Failed", statuses)) == expected


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (
            terminated("score", 137, reason="OOMKilled"),
            Outcome("Failed", "OOMKilled", "the scorer ran out of memory", exit_code=137),
        ),
        (
            terminated("score", 5),
            Outcome(
                "Failed",
                "MalformedPredictions",
                "the vendor's predictions are missing, not JSON, or not to the contract",
                exit_code=5,
            ),
        ),
        (
            terminated("score", 5, step_message("case-0001: no score")),
            Outcome("Failed", "MalformedPredictions", "case-0001: no score", exit_code=5),
        ),
        (
            terminated("score", 6),
            Outcome("Failed", "GroundTruthUnreadable", "the ground truth could not be read", exit_code=6),
        ),
        (
            terminated("score", 6, step_message("truth.json: bad")),
            Outcome("Failed", "GroundTruthUnreadable", "truth.json: bad", exit_code=6),
        ),
        (terminated("score", 1), Outcome("Failed", "ScorerFailed", "the scorer exited with code 1", exit_code=1)),
        (
            terminated("score", 0, REPORT.to_termination_message()),
            Outcome("Succeeded", "Succeeded", "scored 9 of 10 cases", report=REPORT),
        ),
    ],
)
def test_scorer_endings(score, expected):
    assert outcome.run_outcome(job("Failed"), pod("Failed", OK, [score])) == expected


def test_a_score_container_without_an_exit_code_counts_as_zero():
    score = {"name": "score", "state": {"terminated": {"message": REPORT.to_termination_message()}}}
    assert outcome.run_outcome(job("Complete"), pod("Succeeded", OK, [score])).reason == "Succeeded"
    stage_without_code = {"name": "stage", "state": {"terminated": {}}}
    result = outcome.run_outcome(
        job("Complete"),
        pod("Succeeded", [stage_without_code, OK[1]], [terminated("score", 0, REPORT.to_termination_message())]),
    )
    assert result.reason == "Succeeded"


@pytest.mark.parametrize(
    "message",
    [json.dumps({"message": ""}), json.dumps({"message": 5}), json.dumps(["message"]), "{", ""],
)
def test_a_step_message_that_is_not_a_message_falls_back(message):
    result = outcome.run_outcome(job("Failed"), pod("Failed", [terminated("stage", 3, message)]))
    assert result.message == "staging found identifying data in the studies"


def test_step_messages_are_one_line_and_clipped():
    long = "a  b\n" + "x" * 3000
    result = outcome.run_outcome(job("Failed"), pod("Failed", [terminated("stage", 3, step_message(long))]))
    assert result.message == ("a b " + "x" * 3000)[: outcome.MESSAGE_LIMIT - 1] + "…"
    assert len(result.message) == outcome.MESSAGE_LIMIT == 2048
    exact = "y" * 2048
    assert (
        outcome.run_outcome(job("Failed"), pod("Failed", [terminated("stage", 3, step_message(exact))])).message
        == exact
    )


def test_deadline_messages_name_the_pods_or_the_jobs_deadline():
    by_pod = outcome.run_outcome(job(), pod("Failed", OK, reason="DeadlineExceeded", deadline=600))
    assert by_pod == Outcome("Failed", "DeadlineExceeded", "the run did not finish within its deadline of 600 seconds")
    by_job = outcome.run_outcome(job("Failed", "DeadlineExceeded", deadline=1200), None)
    assert by_job == Outcome("Failed", "DeadlineExceeded", "the run did not finish within its deadline of 1200 seconds")
    other_failure = outcome.run_outcome(job("Failed", "BackoffLimitExceeded", "1 failed pod"), None)
    assert other_failure == Outcome("Failed", "JobFailed", "the Job failed (BackoffLimitExceeded): 1 failed pod")


def test_job_and_pod_failures_without_a_step_result():
    assert outcome.run_outcome(job("Complete"), None) == Outcome(
        "Failed", "PodLost", "the Job completed but its pod, which held the results, is gone"
    )
    assert outcome.run_outcome(job("Failed"), None) == Outcome("Failed", "JobFailed", "the Job failed (unknown)")
    evicted = pod("Failed", reason="Evicted", message="The node was low on memory.")
    assert outcome.run_outcome(job(), evicted) == Outcome(
        "Failed", "JobFailed", "the pod failed (Evicted): The node was low on memory."
    )
    assert outcome.run_outcome(job(), pod("Failed")) == Outcome("Failed", "JobFailed", "the pod failed (unknown)")


def test_image_pull_failure_word_for_word():
    waiting = {"name": "vendor", "image": "reg/v:1", "state": {"waiting": {"reason": "ErrImageNeverPull"}}}
    expected = Outcome(
        "Failed", "ImagePullFailed", "container vendor: image reg/v:1 could not be pulled: ErrImageNeverPull"
    )
    assert outcome.run_outcome(job(), pod("Pending", [terminated("stage"), waiting])) == expected
    waiting["state"]["waiting"]["message"] = "manifest unknown"
    del waiting["image"]
    assert (
        outcome.image_pull_failure(pod("Pending", [waiting])).message
        == "container vendor: image ? could not be pulled: manifest unknown"
    )
    other = {"name": "vendor", "state": {"waiting": {"reason": "RegistryUnavailable"}}}
    assert outcome.image_pull_failure(pod("Pending", main=[other])).reason == "ImagePullFailed"
    assert (
        outcome.image_pull_failure(
            pod("Pending", main=[{"name": "v", "state": {"waiting": {"reason": "ContainerCreating"}}}])
        )
        is None
    )


def test_termination_message_size_limit_is_inclusive():
    padded = REPORT.to_termination_message()
    padded = padded[:-1] + " " * (4096 - len(padded.encode())) + "}"
    assert len(padded.encode()) == 4096
    assert isinstance(outcome.parse_report(padded), ScoreReport)
    over = padded[:-1] + " }"
    assert outcome.parse_report(over) == Outcome(
        "Failed",
        "TerminationMessageInvalid",
        "the scorer's termination message is 4097 bytes; at most 4096 are allowed",
    )
    assert outcome.parse_report(None) == Outcome(
        "Failed", "TerminationMessageInvalid", "the scorer wrote no termination message"
    )


def test_a_report_that_does_not_validate_names_the_fields():
    result = outcome.parse_report(json.dumps({"task": "classification", "cases": -1, "scored": 0}))
    assert result.message == (
        "the scorer's termination message is not a ScoreReport: cases: Input should be greater than or equal to 0"
    )
    root = outcome.parse_report("[1]")
    assert root.message.startswith("the scorer's termination message is not a ScoreReport: (root): ")


@pytest.mark.parametrize(
    ("event", "obj", "matters"),
    [
        ("DELETED", {"status": {"phase": "Running"}}, True),
        ("MODIFIED", {"status": {"phase": "Running"}}, False),
        ("MODIFIED", {"status": {"phase": "Failed"}}, True),
        ("MODIFIED", {"status": {"phase": "Succeeded"}}, True),
        ("MODIFIED", pod("Pending", [{"name": "v", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]), True),
    ],
)
def test_pod_events_that_matter(event, obj, matters):
    assert outcome.pod_event_matters(event, obj) is matters


@pytest.mark.parametrize(
    ("event", "obj", "matters"),
    [
        ("DELETED", {}, True),
        ("MODIFIED", job("Complete"), True),
        ("MODIFIED", job("Failed"), True),
        ("MODIFIED", {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}, True),
        ("MODIFIED", {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "q"}}, "spec": {"suspend": False}}, True),
        ("MODIFIED", {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "q"}}, "spec": {"suspend": True}}, False),
        ("MODIFIED", {"metadata": {"labels": {}}, "spec": {"suspend": False}}, False),
        ("MODIFIED", {"status": {"conditions": [{"type": "Complete", "status": "False"}]}}, False),
    ],
)
def test_job_events_that_matter(event, obj, matters):
    assert outcome.job_event_matters(event, obj) is matters


def probe_pod(phase, code=0, message="", reason=None):
    status = {"phase": phase, "containerStatuses": [terminated("probe", code, message)]}
    if reason:
        status["reason"] = reason
    return {"status": status}


def test_probe_results_word_for_word():
    assert outcome.probe_result(None) is None
    assert outcome.probe_result(probe_pod("Failed", reason="DeadlineExceeded")) == ProbeResult(
        False, "probe did not finish within its deadline"
    )
    assert outcome.probe_result({"status": {"phase": "Failed"}}) == ProbeResult(
        False, "probe pod Failed without a container result"
    )
    answered = probe_pod("Failed", 1, json.dumps({"isolated": False, "answered": ["dns a", "tcp b"]}))
    assert outcome.probe_result(answered) == ProbeResult(False, "answered: dns a, tcp b")
    assert outcome.probe_result(probe_pod("Failed", 2, "not json")) == ProbeResult(False, "probe exited with code 2")
    # Exit 1 with a claim of isolation is not isolation.
    assert outcome.probe_result(probe_pod("Failed", 1, json.dumps({"isolated": True}))) == ProbeResult(
        False, "probe exited with code 1"
    )
    assert outcome.probe_result(probe_pod("Succeeded", 0, json.dumps({"isolated": "yes"}))).isolated is False
    pulled = {
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"name": "probe", "image": "i", "state": {"waiting": {"reason": "ErrImagePull"}}}],
        }
    }
    assert outcome.probe_result(pulled) == ProbeResult(
        False, "probe could not start: container probe: image i could not be pulled: ErrImagePull"
    )
    long = probe_pod("Failed", 1, json.dumps({"answered": ["x" * 2000]}))
    assert outcome.probe_result(long).message == ("answered: " + "x" * 2000)[:1023] + "…"


def verify_pod(code, message, phase=None):
    return {
        "status": {
            "phase": phase or ("Succeeded" if code == 0 else "Failed"),
            "containerStatuses": [terminated("verify", code, message)],
        }
    }


def test_verification_verified_whole():
    message = json.dumps(
        {
            "verified": True,
            "contentHash": "sha256:" + "ab" * 32,
            "caseCount": 24,
            "fileCount": 30,
            "cohort": {"sex": {"F": 10, "M": 14, "bad": -1, "x": True}, "ignored": [1]},
            "violations": [],
        }
    )
    assert outcome.verify_result(job("Complete"), verify_pod(0, message)) == VerifyResult(
        True,
        "Verified",
        "Verified",
        "24 cases verified de-identified",
        {
            "contentHash": "sha256:" + "ab" * 32,
            "caseCount": 24,
            "fileCount": 30,
            "cohort": {"sex": {"F": 10, "M": 14}},
            "violations": [],
        },
    )


def test_verification_reads_snake_case_and_bounds_what_it_keeps():
    message = json.dumps(
        {
            "verified": False,
            "content_hash": "h" * 80,
            "case_count": 2,
            "file_count": 0,
            "violations": [
                "not a dict",
                {"keyword": "K" * 200, "tag": "T" * 20, "occurrences": -3, "files": "2"},
                {},
            ],
        }
    )
    result = outcome.verify_result(job("Failed"), verify_pod(3, message))
    assert result.summary == {
        "contentHash": "h" * 80,
        "caseCount": 2,
        "fileCount": 0,
        "violations": [
            {"keyword": "K" * 128, "tag": "T" * 16, "occurrences": 0, "files": 0},
            {"keyword": "?", "tag": "?", "occurrences": 0, "files": 0},
        ],
    }
    too_long = outcome.verify_result(
        job("Failed"), verify_pod(3, json.dumps({"verified": False, "contentHash": "h" * 81}))
    )
    assert "contentHash" not in too_long.summary


def test_verification_failures_word_for_word():
    assert outcome.verify_result(job(), {"status": {"phase": "Running"}}) is None
    assert outcome.verify_result(job("Failed", "DeadlineExceeded", deadline=3600), None) == VerifyResult(
        False, "Error", "DeadlineExceeded", "verification did not finish within its deadline of 3600 seconds", {}
    )
    assert outcome.verify_result(job("Complete"), None) == VerifyResult(
        False, "Error", "PodLost", "the verification pod ended without a result", {}
    )
    assert outcome.verify_result(job("Failed"), verify_pod(2, "nonsense")) == VerifyResult(
        False, "Error", "TerminationMessageInvalid", "the verifier (exit code 2) wrote no JSON summary", {}
    )
    pulled = {
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"name": "verify", "image": "i", "state": {"waiting": {"reason": "ErrImagePull"}}}],
        }
    }
    assert outcome.verify_result(job(), pulled) == VerifyResult(
        False, "Error", "ImagePullFailed", "container verify: image i could not be pulled: ErrImagePull", {}
    )


@pytest.mark.parametrize(
    ("code", "data"),
    [
        (1, {"verified": True, "contentHash": "h", "violations": []}),  # a non-zero exit is never verified
        (0, {"verified": True, "contentHash": "h", "violations": [{"keyword": "PatientName"}]}),
        (0, {"verified": True, "violations": []}),  # no hash, nothing to check runs against
        (0, {"ok": True, "files": 3, "violations": []}),
    ],
)
def test_verification_is_verified_only_when_everything_agrees(code, data):
    assert outcome.verify_result(job("Complete"), verify_pod(code, json.dumps(data))).verified is False


def test_verification_rejections_word_for_word():
    def result(data, code=1):
        return outcome.verify_result(job("Failed"), verify_pod(code, json.dumps(data)))

    unreadable = result({"verified": False, "message": "the studies  folder\nis empty"})
    assert (unreadable.phase, unreadable.reason, unreadable.message) == (
        "Error",
        "DatasetUnreadable",
        "the studies folder is empty",
    )
    errors = result({"verified": False, "errors": 3})
    assert (errors.phase, errors.reason, errors.message) == (
        "Error",
        "DatasetUnreadable",
        "3 files could not be read as DICOM",
    )
    assert result({"verified": False, "errors": 0}).message == "identifying data found: see violations"
    six = [{"keyword": f"K{i}", "files": i} for i in range(6)]
    rejected = result({"verified": False, "violations": six, "message": "ignored when violations are named"})
    assert (rejected.phase, rejected.reason) == ("Rejected", "PHIFound")
    assert (
        rejected.message
        == "identifying data found: K0 in 0 files, K1 in 1 files, K2 in 2 files, K3 in 3 files, K4 in 4 files"
    )
    incomplete = result({"verified": True, "violations": []}, code=0)
    assert (incomplete.phase, incomplete.reason, incomplete.message) == (
        "Error",
        "VerificationIncomplete",
        "the verifier reported success without a content hash",
    )
    many = result({"verified": False, "violations": [{"keyword": "K"}] * 250})
    assert len(many.summary["violations"]) == 200


def test_unreadable_reports_fail_the_run_naming_at_most_five_problems():
    not_json = outcome.parse_report("this is not json")
    assert (not_json.phase, not_json.reason) == ("Failed", "TerminationMessageInvalid")
    assert not_json.message == "the scorer's termination message is not JSON: Expecting value: line 1 column 1 (char 0)"
    bad = {
        "task": "classification",
        "cases": -1,
        "scored": -1,
        "metrics": {"auc": {"value": "x"}},
        "a": 1,
        "b": 2,
        "c": 3,
    }
    invalid = outcome.parse_report(json.dumps(bad))
    assert (invalid.phase, invalid.reason) == ("Failed", "TerminationMessageInvalid")
    problems = invalid.message.removeprefix("the scorer's termination message is not a ScoreReport: ").split("; ")
    assert len(problems) == 5
    assert problems[:3] == [
        "cases: Input should be greater than or equal to 0",
        "scored: Input should be greater than or equal to 0",
        "metrics.auc.value: Input should be a valid number, unable to parse string as a number",
    ]
