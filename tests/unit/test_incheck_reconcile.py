"""The operator's side of the in-pod check: the run Job carries the operator's own API
endpoint, and a run the stage step refused is Failed, not judged, with an Event and a count."""

from __future__ import annotations

import json

from test_reconcile import NS, clock, make_runtime, run, setup_cluster, status  # noqa: F401 - clock is a fixture

from lightbox.api.run import IsolationCheckConfig
from lightbox.operator import validations

REFUSAL = "api-server 10.96.0.1:443 (TCP connection established); NetworkPolicies are not enforced for this pod"


def stage_env(kube, job_name: str) -> dict[str, str]:
    spec = kube.objects[("jobs", NS, job_name)]["spec"]["template"]["spec"]
    (stage,) = [c for c in spec["initContainers"] if c["name"] == "stage"]
    return {e["name"]: e.get("value") for e in stage["env"]}


def refuse_at_staging(kube, job_name: str) -> None:
    """What the Job controller and a kubelet show after the stage step exited 8."""
    job = kube.objects[("jobs", NS, job_name)]
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    message = json.dumps({"reason": "IsolationNotEnforced", "message": REFUSAL})
    statuses = [
        {"name": "stage", "state": {"terminated": {"exitCode": 8, "reason": "Error", "message": message}}},
        {"name": "vendor", "state": {"waiting": {"reason": "PodInitializing"}}},
    ]
    labels = {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": job_name}
    kube.put("pods", {"metadata": {"name": f"{job_name}-pod", "namespace": NS, "labels": labels},
                      "status": {"phase": "Failed", "initContainerStatuses": statuses, "containerStatuses": []}})


def test_the_run_job_carries_the_endpoint_the_operator_uses(clock):
    kube = setup_cluster()
    runtime = make_runtime(kube)
    runtime.api_server = "https://192.0.2.10:6443"
    run(validations.reconcile_validation(runtime, NS, "val"))
    config = IsolationCheckConfig.model_validate_json(stage_env(kube, "val-r1")["LIGHTBOX_ISOLATION_CHECK"])
    assert config.api_server == "https://192.0.2.10:6443"


def test_a_refused_run_is_failed_unjudged_with_an_event_and_a_count(clock):
    kube = setup_cluster()
    runtime = make_runtime(kube)
    run(validations.reconcile_validation(runtime, NS, "val"))
    refuse_at_staging(kube, "val-r1")
    run(validations.reconcile_validation(runtime, NS, "val"))

    (record,) = status(kube)["runs"]
    assert (record["phase"], record["reason"]) == ("Failed", "IsolationNotEnforced")
    assert record["message"] == REFUSAL
    assert record.get("verdict") is None and record.get("metrics") is None
    assert status(kube).get("verdict") is None
    (event,) = [e for e in kube.events if e["reason"] == "IsolationNotEnforced"]
    assert event["type"] == "Warning" and "10.96.0.1:443" in event["message"]
    assert 'lightbox_runs_total{reason="IsolationNotEnforced"} 1.0' in runtime.exporter.render().decode()
