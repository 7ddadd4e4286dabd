"""Job/Pod status → run outcome: every failure gets its own reason."""

from __future__ import annotations

import json

import pytest

from lightbox.api.results import MetricValue, ScoreReport
from lightbox.operator import outcome


def terminated(name, code=0, message="", reason=None):
    state = {"exitCode": code, "message": message}
    if reason or code:
        state["reason"] = reason or ("Completed" if code == 0 else "Error")
    return {"name": name, "state": {"terminated": state}, "image": f"img/{name}"}


def waiting(name, reason, message=""):
    return {"name": name, "state": {"waiting": {"reason": reason, "message": message}}, "image": f"img/{name}"}


def running(name):
    return {"name": name, "state": {"running": {}}}


def pod(phase, init=(), main=(), reason=None, deadline=600):
    status = {"phase": phase, "initContainerStatuses": list(init), "containerStatuses": list(main)}
    if reason:
        status["reason"] = reason
    return {"spec": {"activeDeadlineSeconds": deadline}, "status": status}


def job(condition=None, reason=None, deadline=1200):
    conditions = [{"type": condition, "status": "True", "reason": reason or "", "message": "msg"}] if condition else []
    return {"spec": {"activeDeadlineSeconds": deadline}, "status": {"conditions": conditions}}


REPORT = ScoreReport(
    task="classification", cases=10, scored=10, metrics={"auc": MetricValue(value=0.9, lower=0.8, upper=0.97)}
)
OK_STAGE, OK_VENDOR = terminated("stage"), terminated("vendor")


def test_running_is_not_an_outcome():
    assert outcome.run_outcome(job(), pod("Running", [OK_STAGE, running("vendor")])) is None
    assert outcome.run_outcome(job(), None) is None


def test_success_carries_the_validated_report():
    result = outcome.run_outcome(
        job("Complete"),
        pod("Succeeded", [OK_STAGE, OK_VENDOR], [terminated("score", 0, REPORT.to_termination_message())]),
    )
    assert result.phase == "Succeeded" and result.reason == "Succeeded"
    assert result.report == REPORT


def test_success_is_read_from_the_pod_before_the_job_catches_up():
    result = outcome.run_outcome(
        job(), pod("Succeeded", [OK_STAGE, OK_VENDOR], [terminated("score", 0, REPORT.to_termination_message())])
    )
    assert result is not None and result.report == REPORT


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_image_pull_failure_ends_the_run_while_the_pod_is_pending(reason):
    result = outcome.run_outcome(job(), pod("Pending", [OK_STAGE, waiting("vendor", reason, "not found")]))
    assert result.reason == "ImagePullFailed"
    assert "vendor" in result.message and "img/vendor" in result.message


def test_deadline_from_the_pod_or_the_job():
    by_pod = outcome.run_outcome(job(), pod("Failed", [OK_STAGE, terminated("vendor", 137)], reason="DeadlineExceeded"))
    assert by_pod.reason == "DeadlineExceeded" and "600" in by_pod.message
    by_job = outcome.run_outcome(job("Failed", "DeadlineExceeded"), None)
    assert by_job.reason == "DeadlineExceeded"


def test_deadline_wins_over_the_killed_vendor_exit_code():
    result = outcome.run_outcome(
        job("Failed", "DeadlineExceeded"), pod("Failed", [OK_STAGE, terminated("vendor", 137)])
    )
    assert result.reason == "DeadlineExceeded"


def test_oom_killed_vendor():
    result = outcome.run_outcome(
        job("Failed"), pod("Failed", [OK_STAGE, terminated("vendor", 137, reason="OOMKilled")])
    )
    assert result.reason == "OOMKilled"


def test_vendor_exit_code_is_named_and_its_message_not_copied():
    result = outcome.run_outcome(
        job("Failed"), pod("Failed", [OK_STAGE, terminated("vendor", 2, message="patient John Doe")])
    )
    assert result.reason == "VendorExitCode" and result.exit_code == 2
    assert "code 2" in result.message and "John" not in result.message


def test_phi_found_at_staging_uses_the_stagers_message():
    message = json.dumps({"reason": "PHIFound", "message": "PatientName in 3 files"})
    result = outcome.run_outcome(job("Failed"), pod("Failed", [terminated("stage", 3, message)]))
    assert result.reason == "PHIFound" and result.message == "PatientName in 3 files"
    assert outcome.run_outcome(job("Failed"), pod("Failed", [terminated("stage", 3, "garbage")])).reason == "PHIFound"


def test_dataset_unreadable_and_other_stage_failures():
    assert outcome.run_outcome(job("Failed"), pod("Failed", [terminated("stage", 4)])).reason == "DatasetUnreadable"
    assert outcome.run_outcome(job("Failed"), pod("Failed", [terminated("stage", 1)])).reason == "StageFailed"
    assert outcome.run_outcome(job("Failed"), pod("Failed", [terminated("stage", 7)])).reason == "DatasetChanged"


def test_malformed_predictions_from_the_scorer():
    message = json.dumps({"reason": "MalformedPredictions", "message": "predictions.json: not JSON"})
    result = outcome.run_outcome(job("Failed"), pod("Failed", [OK_STAGE, OK_VENDOR], [terminated("score", 5, message)]))
    assert result.reason == "MalformedPredictions" and "not JSON" in result.message
    assert (
        outcome.run_outcome(job("Failed"), pod("Failed", [OK_STAGE, OK_VENDOR], [terminated("score", 6)])).reason
        == "GroundTruthUnreadable"
    )
    assert (
        outcome.run_outcome(job("Failed"), pod("Failed", [OK_STAGE, OK_VENDOR], [terminated("score", 1)])).reason
        == "ScorerFailed"
    )


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ("", "no termination message"),
        ("this is not json", "not JSON"),
        ("{" + " " * 5000 + "}", "bytes"),
        (json.dumps({"task": "classification", "cases": -1, "scored": 0}), "not a ScoreReport"),
        (json.dumps({"task": "classification", "cases": 1, "scored": 1, "caseIds": ["x"]}), "not a ScoreReport"),
        (json.dumps([1, 2]), "not a ScoreReport"),
    ],
)
def test_termination_message_invalid(message, fragment):
    result = outcome.run_outcome(
        job("Complete"), pod("Succeeded", [OK_STAGE, OK_VENDOR], [terminated("score", 0, message)])
    )
    assert result.reason == "TerminationMessageInvalid" and fragment in result.message
    assert len(result.message) <= outcome.MESSAGE_LIMIT


def test_job_failed_without_a_pod_and_completed_without_one():
    assert outcome.run_outcome(job("Failed", "BackoffLimitExceeded"), None).reason == "JobFailed"
    assert outcome.run_outcome(job("Complete"), None).reason == "PodLost"


def test_probe_results():
    isolated = {
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [terminated("probe", 0, '{"isolated":true,"answered":[]}')],
        }
    }
    assert outcome.probe_result(isolated) == outcome.ProbeResult(True, "nothing answered the probe")
    leaky = {
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                terminated("probe", 1, '{"isolated":false,"answered":["dns 10.96.0.10:53 (DNS server replied)"]}')
            ],
        }
    }
    result = outcome.probe_result(leaky)
    assert result.isolated is False and "dns 10.96.0.10" in result.message
    assert outcome.probe_result({"status": {"phase": "Running"}}) is None
    # Exit 0 without the JSON is not proof of isolation.
    assert (
        outcome.probe_result(
            {"status": {"phase": "Succeeded", "containerStatuses": [terminated("probe", 0, "")]}}
        ).isolated
        is False
    )


def verify_pod(code, message):
    return {
        "status": {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [terminated("verify", code, message)],
        }
    }


def test_verify_result_verified():
    message = json.dumps(
        {"verified": True, "contentHash": "abc", "caseCount": 24, "fileCount": 24, "errors": 0,
         "cohort": {"sex": {"F": 10, "M": 14}}, "violations": []}
    )
    result = outcome.verify_result(job("Complete"), verify_pod(0, message))
    assert result.verified and result.phase == "Verified"
    assert result.summary["caseCount"] == 24 and result.summary["cohort"] == {"sex": {"F": 10, "M": 14}}


def test_verify_result_rejected_with_violations_but_no_values():
    message = json.dumps(
        {
            "verified": False,
            "contentHash": "abc",
            "caseCount": 2,
            "violations": [
                {"keyword": "PatientName", "tag": "(0010,0010)", "occurrences": 2, "files": 2, "value": "DOE^JOHN"}
            ],
        }
    )
    result = outcome.verify_result(job("Failed"), verify_pod(3, message))
    assert not result.verified and result.phase == "Rejected" and result.reason == "PHIFound"
    assert result.summary["violations"] == [
        {"keyword": "PatientName", "tag": "(0010,0010)", "occurrences": 2, "files": 2}
    ]
    assert "DOE" not in json.dumps(result.summary)


@pytest.mark.parametrize("message", ["", "nonsense", "[]", json.dumps({"verified": "yes"})])
def test_verify_result_defensive(message):
    result = outcome.verify_result(job("Failed"), verify_pod(1, message))
    assert result.verified is False and result.phase == "Error"


def test_verify_claims_success_without_hash_is_not_verified():
    result = outcome.verify_result(job("Complete"), verify_pod(0, json.dumps({"verified": True})))
    assert result.verified is False


def test_verify_result_reads_the_deid_cli_report_shape_too():
    message = json.dumps({"ok": True, "files": 3, "contentHash": "abc", "violations": [], "errors": 0, "cohort": {}})
    result = outcome.verify_result(job("Complete"), verify_pod(0, message))
    assert result.verified and result.summary["fileCount"] == 3


def test_isolation_not_enforced_at_staging_names_what_answered_and_is_not_judged():
    """Exit 8 of the stage step: the in-pod check found the network reachable; the vendor never ran."""
    message = json.dumps(
        {"reason": "IsolationNotEnforced", "message": "api-server 10.96.0.1:443 (TCP connection established)"}
    )
    result = outcome.run_outcome(
        job("Failed"), pod("Failed", [terminated("stage", 8, message), waiting("vendor", "PodInitializing")])
    )
    assert (result.phase, result.reason, result.exit_code) == ("Failed", "IsolationNotEnforced", 8)
    assert result.message == "api-server 10.96.0.1:443 (TCP connection established)"
    assert result.report is None  # no report, so no verdict: a run that never scored is not judged
    fallback = outcome.run_outcome(job("Failed"), pod("Failed", [terminated("stage", 8, "garbage")]))
    assert fallback.reason == "IsolationNotEnforced" and "vendor container was not started" in fallback.message


# Deep nesting fits in a 4 KiB termination message and exhausts json's recursion limit: the reconcile
# pass must judge the message, not crash on it (a crash would be retried forever).
DEEP = "[" * 4000


def test_a_deeply_nested_scorer_message_is_invalid_not_a_crash():
    finished = pod("Succeeded", [OK_STAGE, OK_VENDOR], [terminated("score", 0, DEEP)])
    result = outcome.run_outcome(job("Complete"), finished)
    assert result.reason == "TerminationMessageInvalid" and "not JSON" in result.message


def test_a_deeply_nested_stage_message_falls_back_to_the_fixed_text():
    stage = terminated("stage", outcome.layout.EXIT_PHI_FOUND, DEEP)
    result = outcome.run_outcome(job("Failed"), pod("Failed", [stage]))
    assert result.reason == "PHIFound" and result.message == "staging found identifying data in the studies"


def test_a_deeply_nested_probe_or_verifier_message_is_not_isolated_nor_verified():
    probe = {"status": {"phase": "Succeeded", "containerStatuses": [terminated("probe", 0, DEEP)]}}
    assert outcome.probe_result(probe) == outcome.ProbeResult(False, "probe exited with code 0")
    result = outcome.verify_result(job("Complete"), verify_pod(0, DEEP))
    assert result.verified is False and result.reason == "TerminationMessageInvalid"
