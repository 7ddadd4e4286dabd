"""Bad input and failure: each ends with a clear condition or reason, and nothing stuck.

Tests that need a pod to *finish* run the dev runner; tests about what happens
while runs wait or are in flight leave pods unexecuted (there is no kubelet
without the runner), which holds runs in progress for as long as they need.
"""

from __future__ import annotations

import json

from operator_harness import (
    Operator,
    add_phi,
    algorithm,
    apply,
    apply_sample,
    custom,
    dataset,
    delete_policy,
    finish_pod_as_kubelet,
    finished,
    get,
    image,
    jobs,
    local_runner,
    mark_verified,
    pods_of_job,
    policy,
    runs_of,
    validation,
    wait_for,
)

from lightbox.api.results import TERMINATION_MESSAGE_LIMIT


def conditions(obj):
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def phases(api_client, ns, *names):
    return {n: ((get(api_client, "validations", ns, n) or {}).get("status") or {}).get("phase") for n in names}


def patch_policy(api_client, name, spec):
    custom(api_client).patch_cluster_custom_object("lightbox.dev", "v1alpha1", "sandboxpolicies", name, {"spec": spec})


def test_blocked_by_policy_and_unverified_dataset_then_proceeds_without_recreation(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns, pol = namespace, f"blocked-{namespace}"
    add_phi(claim)
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with local_runner(api_client, claim, tmp_path / "runner"):
            apply(kubectl, None, policy(pol, ns, allowedRegistries=["registry.elsewhere.test"]))
            apply(
                kubectl, ns,
                dataset("chest"), dataset("dirty", sub="dirty"),
                algorithm("classifier", image("classifier")),
                validation("not-allowed", "classifier"),
                validation("unverified", "classifier", "dirty"),
            )
            get_v = lambda name: lambda: get(api_client, "validations", ns, name)  # noqa: E731
            blocked = wait_for(
                get_v("not-allowed"),
                lambda v: conditions(v or {}).get("Admitted", {}).get("reason") == "RegistryNotAllowed",
                60, "RegistryNotAllowed", operator,
            )
            assert blocked["status"]["phase"] == "Blocked"
            assert "registry.lightbox.test/reference/classifier" in conditions(blocked)["Admitted"]["message"]
            refused = wait_for(
                lambda: get(api_client, "algorithms", ns, "classifier"),
                lambda a: conditions(a or {}).get("Allowed", {}).get("status") == "False",
                60, "the Algorithm's Allowed condition", operator,
            )
            assert conditions(refused)["Allowed"]["reason"] == "RegistryNotAllowed"

            dirty = wait_for(
                lambda: get(api_client, "datasets", ns, "dirty"),
                lambda d: ((d or {}).get("status") or {}).get("phase") == "Rejected",
                60, "the dirty dataset to be rejected", operator,
            )
            assert dirty["status"]["verified"] is False
            assert [v["keyword"] for v in dirty["status"]["violations"]] == ["PatientName"]
            assert conditions(dirty)["Verified"]["reason"] == "PHIFound"
            assert "DOE" not in json.dumps(dirty["status"])

            # The policy now allows the registry: the blocked one proceeds, the unverified one stays blocked.
            patch_policy(api_client, pol, {"allowedRegistries": ["registry.lightbox.test"]})
            done = wait_for(get_v("not-allowed"), finished, 120, "the unblocked run", operator)
            assert runs_of(done)[-1]["phase"] == "Succeeded", runs_of(done)
            assert conditions(done)["Admitted"]["status"] == "True"
            assert conditions(get(api_client, "algorithms", ns, "classifier"))["Allowed"]["status"] == "True"
            unverified = get_v("unverified")()
            assert unverified["status"]["phase"] == "Blocked"
            admitted = conditions(unverified)["Admitted"]
            assert admitted["reason"] == "DatasetNotVerified" and "PatientName" in admitted["message"]
            assert not runs_of(unverified)
            assert [j["metadata"]["name"] for j in jobs(api_client, ns)] == ["not-allowed-r1"]
    finally:
        operator.stop()
        delete_policy(api_client, pol)


def test_vendor_failures_end_with_specific_reasons(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    """Non-zero exit, hang past the deadline, over the memory limit, malformed predictions, unpullable image: all at
    once."""
    ns, pol = namespace, f"vendors-{namespace}"
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    cases = {
        "exits": ("misbehave-read-truth", "VendorExitCode"),
        "hangs": ("misbehave-hang", "DeadlineExceeded"),
        "hogs": ("misbehave-hog", "OOMKilled"),
        "malformed": ("misbehave-malformed", "MalformedPredictions"),
        "missing-image": ("not-in-any-registry", "ImagePullFailed"),
    }
    try:
        with local_runner(api_client, claim, tmp_path / "runner", concurrency=len(cases)):
            apply(kubectl, None, policy(pol, ns, maxConcurrentRuns=len(cases)))
            docs = [dataset()]
            for name, (img, _) in cases.items():
                memory = "256Mi" if name == "hogs" else "1Gi"
                docs += [algorithm(name, image(img), timeout=60, memory=memory), validation(name, name)]
            apply(kubectl, ns, *docs)
            for name, (_, reason) in cases.items():
                result = wait_for(
                    lambda n=name: get(api_client, "validations", ns, n), finished, 150, f"{name} to end", operator
                )
                (run,) = runs_of(result)
                assert (run["phase"], run["reason"]) == ("Failed", reason), run
                assert run["message"]
                assert result["status"]["phase"] == "Failed"
                assert conditions(result)["Succeeded"]["reason"] == reason
                assert "verdict" not in run
            exits = runs_of(get(api_client, "validations", ns, "exits"))[0]
            assert "code 1" in exits["message"]
            # Nothing left running: the unpullable run's Job was stopped too.
            wait_for(
                lambda: [j["metadata"]["name"] for j in jobs(api_client, ns) if not _job_done(j)],
                lambda active: not active, 30, "no active Jobs", operator,
            )
    finally:
        operator.stop()
        delete_policy(api_client, pol)


def _job_done(job):
    return any(
        c["type"] in {"Complete", "Failed"} and c["status"] == "True" for c in job["status"].get("conditions") or []
    ) or bool(job["metadata"].get("deletionTimestamp"))


def test_termination_message_not_json_or_oversized(api_client, kubeconfig, kubectl, namespace, tmp_path):
    ns, pol = namespace, f"termmsg-{namespace}"
    apply_sample(kubectl, ns, pol, isolationProbe={"required": False})
    mark_verified(api_client, ns, "chest")
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    messages = {
        "not-json": ("scored everything, trust me", "not JSON"),
        "oversized": (
            json.dumps({"task": "classification", "cases": 1, "scored": 1, "pad": "x" * TERMINATION_MESSAGE_LIMIT}),
            "bytes",
        ),
        "wrong-shape": (
            json.dumps({"task": "classification", "cases": 3, "scored": 9, "caseIds": ["a"]}),
            "not a ScoreReport",
        ),
    }
    try:
        apply(kubectl, ns, *[validation(name, "classifier") for name in messages])
        for name, (message, _) in messages.items():
            pod = wait_for(lambda n=name: pods_of_job(api_client, ns, f"{n}-r1"), bool, 60, f"{name}'s pod", operator)[
                0
            ]
            finish_pod_as_kubelet(api_client, ns, pod["metadata"]["name"], 0, message)
        for name, (_, fragment) in messages.items():
            result = wait_for(
                lambda n=name: get(api_client, "validations", ns, n), finished, 60, f"{name} to end", operator
            )
            (run,) = runs_of(result)
            assert (run["phase"], run["reason"]) == ("Failed", "TerminationMessageInvalid"), run
            assert fragment in run["message"]
            assert "metrics" not in run
    finally:
        operator.stop()
        delete_policy(api_client, pol)


def test_policy_changed_while_runs_are_queued(api_client, kubeconfig, kubectl, namespace, tmp_path):
    ns, pol = namespace, f"queue-{namespace}"
    apply_sample(kubectl, ns, pol, maxConcurrentRuns=1, isolationProbe={"required": False})
    mark_verified(api_client, ns, "chest")
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    names = ("first", "second", "third")
    try:
        for name in names:  # separate applies: creation order is the queue order
            apply(kubectl, ns, validation(name, "classifier"))
        wait_for(
            lambda: phases(api_client, ns, *names),
            lambda p: p == {"first": "Running", "second": "Queued", "third": "Queued"},
            60,
            "one running, two queued",
            operator,
        )
        second = get(api_client, "validations", ns, "second")
        assert runs_of(second)[0]["reason"] == "WaitingForCapacity"
        assert "limit of 1 concurrent runs" in runs_of(second)[0]["message"]

        # More room: the older queued run starts first.
        patch_policy(api_client, pol, {"maxConcurrentRuns": 2})
        wait_for(
            lambda: phases(api_client, ns, *names),
            lambda p: p == {"first": "Running", "second": "Running", "third": "Queued"},
            60,
            "second started before third",
            operator,
        )

        # The registry is no longer allowed: the queued run is held, with the reason; running ones go on.
        patch_policy(api_client, pol, {"allowedRegistries": ["registry.elsewhere.test"], "maxConcurrentRuns": 3})
        third = wait_for(lambda: get(api_client, "validations", ns, "third"),
                         lambda v: v["status"]["phase"] == "Blocked", 60, "third blocked", operator)
        assert runs_of(third)[0]["phase"] == "Queued" and runs_of(third)[0]["reason"] == "NotAdmitted"
        assert conditions(third)["Admitted"]["reason"] == "RegistryNotAllowed"
        assert sorted(j["metadata"]["name"] for j in jobs(api_client, ns)) == ["first-r1", "second-r1"]

        # Allowed again: it proceeds without being re-created.
        patch_policy(api_client, pol, {"allowedRegistries": ["registry.lightbox.test"]})
        wait_for(
            lambda: phases(api_client, ns, *names),
            lambda p: set(p.values()) == {"Running"},
            60,
            "all running",
            operator,
        )
        assert sorted(j["metadata"]["name"] for j in jobs(api_client, ns)) == ["first-r1", "second-r1", "third-r1"]
    finally:
        operator.stop()
        delete_policy(api_client, pol)


def test_dataset_deleted_mid_run(api_client, kubeconfig, kubectl, namespace, tmp_path):
    ns, pol = namespace, f"deleted-{namespace}"
    apply_sample(kubectl, ns, pol, isolationProbe={"required": False})
    mark_verified(api_client, ns, "chest")
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        apply(kubectl, ns, validation("inflight", "classifier"))
        wait_for(
            lambda: phases(api_client, ns, "inflight"), lambda p: p["inflight"] == "Running", 60, "running", operator
        )
        assert kubectl("delete", "dataset", "chest", "-n", ns).returncode == 0
        result = wait_for(
            lambda: get(api_client, "validations", ns, "inflight"), finished, 60, "the run to end", operator
        )
        (run,) = runs_of(result)
        assert (run["phase"], run["reason"]) == ("Failed", "DatasetDeleted"), run
        assert conditions(result)["Admitted"]["reason"] == "DatasetNotFound"
        assert result["status"]["phase"] == "Blocked"
        wait_for(lambda: jobs(api_client, ns), lambda js: not js, 60, "the run's Job to be deleted", operator)
    finally:
        operator.stop()
        delete_policy(api_client, pol)


def test_namespace_not_isolated_blocks_vendor_code(api_client, kubeconfig, kubectl, namespace, tmp_path):
    """A probe that reached something: condition, Event and metric say so, and no Job is created."""
    import urllib.request

    ns, pol = namespace, f"leaky-{namespace}"
    apply_sample(kubectl, ns, pol)
    mark_verified(api_client, ns, "chest")
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        apply(kubectl, ns, validation("waits", "classifier"))
        waiting = wait_for(lambda: get(api_client, "validations", ns, "waits"),
                           lambda v: bool(runs_of(v)) and runs_of(v)[0].get("reason") == "AwaitingIsolationProbe",
                           60, "the run to wait for the probe", operator)
        assert waiting["status"]["phase"] == "Queued"
        probe = wait_for(lambda: _probe_pods(api_client, ns), bool, 60, "the probe pod", operator)[0]
        spec = probe["spec"]
        assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"] is True
        assert any(n["metadata"]["name"] == probe["metadata"]["name"] for n in _netpols(api_client, ns))
        # What a kubelet would report for a probe that got an answer from the API server.
        answered = json.dumps(
            {"isolated": False, "answered": ["api-server 10.96.0.1:443 (TCP connection established)"]}
        )
        _finish_probe(api_client, ns, probe["metadata"]["name"], answered)

        held = wait_for(
            lambda: get(api_client, "validations", ns, "waits"),
            lambda v: runs_of(v)[0].get("reason") == "NamespaceNotIsolated",
            60,
            "NamespaceNotIsolated",
            operator,
        )
        assert "api-server 10.96.0.1:443" in runs_of(held)[0]["message"]
        assert jobs(api_client, ns) == []
        status = custom(api_client).get_cluster_custom_object("lightbox.dev", "v1alpha1", "sandboxpolicies", pol)[
            "status"
        ]
        assert status["isolation"][ns]["isolated"] is False
        isolated = conditions({"status": status})["Isolated"]
        assert isolated["status"] == "False" and isolated["reason"] == "NetworkReachable"
        events = kubectl(
            "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={pol}", "-o", "json"
        )
        assert "NamespaceNotIsolated" in events.stdout
        text = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port()}/metrics", timeout=5).read().decode()
        assert f'lightbox_namespace_isolated{{namespace="{ns}",policy="{pol}"}} 0.0' in text
    finally:
        operator.stop()
        delete_policy(api_client, pol)


def test_kueue_queue_name_creates_a_suspended_labelled_job(api_client, kubeconfig, kubectl, namespace, tmp_path):
    ns, pol = namespace, f"kueue-{namespace}"
    apply_sample(kubectl, ns, pol, queueName="gpu", isolationProbe={"required": False})
    mark_verified(api_client, ns, "chest")
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        apply(kubectl, ns, validation("queued", "classifier"))
        (job,) = wait_for(lambda: jobs(api_client, ns), bool, 60, "the Job", operator)
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
        run = wait_for(lambda: get(api_client, "validations", ns, "queued"),
                       lambda v: bool(runs_of(v)) and runs_of(v)[0].get("reason") == "KueueAdmissionPending",
                       60, "KueueAdmissionPending", operator)
        assert runs_of(run)[0]["phase"] == "Queued"
        # Kueue admits it by unsuspending: the run shows as Running.
        from kubernetes import client

        client.BatchV1Api(api_client).patch_namespaced_job("queued-r1", ns, {"spec": {"suspend": False}})
        wait_for(lambda: get(api_client, "validations", ns, "queued"),
                 lambda v: runs_of(v)[0]["phase"] == "Running", 60, "Running after admission", operator)
    finally:
        operator.stop()
        delete_policy(api_client, pol)


def _probe_pods(api_client, ns):
    from kubernetes import client

    items = (
        client.CoreV1Api(api_client)
        .list_namespaced_pod(ns, label_selector="lightbox.dev/component=isolation-probe")
        .items
    )
    return [api_client.sanitize_for_serialization(p) for p in items]


def _netpols(api_client, ns):
    from operator_harness import network_policies

    return network_policies(api_client, ns)


def _finish_probe(api_client, ns, name, message):
    import time as _time

    from kubernetes import client

    now = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime())
    body = {
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "probe",
                    "image": "x",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "message": message,
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
    }
    client.CoreV1Api(api_client).patch_namespaced_pod_status(name, ns, body)


def test_identifying_data_found_at_staging(api_client, kubeconfig, kubectl, namespace, claim, tmp_path):
    """Files changed after verification: the trusted stage step refuses them and the run says PHIFound."""
    import pydicom

    ns, pol = namespace, f"phi-{namespace}"
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with local_runner(api_client, claim, tmp_path / "runner"):
            apply_sample(kubectl, ns, pol)
            wait_for(lambda: get(api_client, "datasets", ns, "chest"),
                     lambda d: ((d or {}).get("status") or {}).get("verified") is True, 60, "verification", operator)
            first = sorted((claim / "chest" / "studies").rglob("*.dcm"))[0]
            ds = pydicom.dcmread(first)
            ds.PatientName = "DOE^JANE"
            ds.save_as(first)
            apply(kubectl, ns, validation("late-phi", "classifier"))
            result = wait_for(lambda: get(api_client, "validations", ns, "late-phi"), finished, 90, "the run", operator)
            (run,) = runs_of(result)
            assert (run["phase"], run["reason"]) == ("Failed", "PHIFound"), run
            assert "DOE" not in json.dumps(result)
    finally:
        operator.stop()
        delete_policy(api_client, pol)


def test_studies_changed_after_verification_are_refused_until_verified_again(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    """A run reads the data its Dataset's verification described, or none: the audit trail's hash means what it says."""
    import pydicom

    ns, pol = namespace, f"changed-{namespace}"
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    verified = lambda d: ((d or {}).get("status") or {}).get("verified") is True  # noqa: E731
    try:
        with local_runner(api_client, claim, tmp_path / "runner"):
            apply_sample(kubectl, ns, pol)
            before = wait_for(lambda: get(api_client, "datasets", ns, "chest"), verified, 60, "verification", operator)
            # Re-exported after verification: nothing identifying, but not the data that was verified.
            first = sorted((claim / "chest" / "studies").rglob("*.dcm"))[0]
            ds = pydicom.dcmread(first)
            ds.InstanceNumber = 99
            ds.save_as(first)

            apply(kubectl, ns, validation("stale", "classifier"))
            stale = wait_for(lambda: get(api_client, "validations", ns, "stale"), finished, 90, "the run", operator)
            (run,) = runs_of(stale)
            assert (run["phase"], run["reason"]) == ("Failed", "DatasetChanged"), run
            assert before["status"]["contentHash"] in run["message"] and "spec.revision" in run["message"]

            # Verified again under a new revision: the new content is what runs read.
            changed = dataset()
            changed["spec"]["revision"] = "2026-12"
            apply(kubectl, ns, changed)
            after = wait_for(
                lambda: get(api_client, "datasets", ns, "chest"),
                lambda d: verified(d) and d["status"]["contentHash"] != before["status"]["contentHash"],
                60, "verification of the new revision", operator,
            )
            assert after["status"]["caseCount"] == before["status"]["caseCount"]
            apply(kubectl, ns, validation("fresh", "classifier"))
            fresh = wait_for(lambda: get(api_client, "validations", ns, "fresh"), finished, 90, "the run", operator)
            (run,) = runs_of(fresh)
            assert run["phase"] == "Succeeded" and run["datasetHash"] == after["status"]["contentHash"], run
    finally:
        operator.stop()
        delete_policy(api_client, pol)
