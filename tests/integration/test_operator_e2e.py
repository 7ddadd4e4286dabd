"""End to end on the real control plane: kubectl apply → operator → Job → dev runner → status.

The real stager, reference classifier and scorer run through the development
runner, so what lands in status is the real scorer's output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from operator_harness import (
    AUDIT_NAMESPACE,
    Operator,
    apply_sample,
    audit_records,
    delete_policy,
    finished,
    get,
    jobs,
    local_runner,
    network_policies,
    runs_of,
    validation,
    wait_for,
)


def test_validation_runs_end_to_end(api_client, kubeconfig, kubectl, namespace, claim, tmp_path):
    ns = namespace
    pol = f"e2e-{ns}"
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with local_runner(api_client, claim, tmp_path / "runner"):
            apply_sample(kubectl, ns, pol, validation("chest-auc", "classifier"))

            final = wait_for(
                lambda: get(api_client, "validations", ns, "chest-auc"),
                finished,
                timeout=150,
                what="the run to finish",
                operator=operator,
            )
            run = runs_of(final)[-1]
            assert run["phase"] == "Succeeded", (run, operator.tail())
            assert run["name"] == "chest-auc-r1"
            auc = run["metrics"]["auc"]
            assert auc["lower"] <= auc["value"] <= auc["upper"]
            assert run["cases"] == 60 and run["scored"] == 60
            assert run["verdict"] in {"Passed", "Inconclusive", "Failed"}
            assert run["criteria"][0]["metric"] == "auc"
            status = final["status"]
            assert status["phase"] == "Succeeded"
            assert status["verdict"] == run["verdict"]
            assert status["summary"].startswith("auc ")
            admitted = {c["type"]: c for c in status["conditions"]}["Admitted"]
            assert admitted["status"] == "True"

            table = kubectl("get", "validations", "-n", ns)
            assert table.returncode == 0, table.stderr
            header, row = table.stdout.splitlines()[:2]
            assert "PHASE" in header and "VERDICT" in header and "METRIC" in header
            assert "Succeeded" in row and run["verdict"] in row and "auc 0." in row

            data = get(api_client, "datasets", ns, "chest")["status"]
            assert data["verified"] is True and data["phase"] == "Verified"
            assert data["caseCount"] == 60 and data["contentHash"]
            assert sum(data["cohort"]["sex"].values()) == 60

            allowed = {c["type"]: c for c in get(api_client, "algorithms", ns, "classifier")["status"]["conditions"]}
            assert (allowed["Allowed"]["status"], allowed["Allowed"]["reason"]) == ("True", "PolicyAllows")
            algorithms_table = kubectl("get", "algorithms", "-n", ns).stdout.splitlines()
            assert "ALLOWED" in algorithms_table[0] and "True" in algorithms_table[1]

            pol_status = get_policy(api_client, pol)["status"]
            assert pol_status["isolation"][ns]["isolated"] is True
            assert {c["type"]: c["status"] for c in pol_status["conditions"]}["Isolated"] == "True"

            (job,) = jobs(api_client, ns)
            assert job["metadata"]["name"] == "chest-auc-r1"
            assert job["spec"]["backoffLimit"] == 0
            assert job["metadata"]["ownerReferences"][0]["kind"] == "Validation"
            netpols = {n["metadata"]["name"]: n for n in network_policies(api_client, ns)}
            assert netpols["chest-auc-r1"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
            assert "ingress" not in netpols["chest-auc-r1"]["spec"] or not netpols["chest-auc-r1"]["spec"]["ingress"]

            events = kubectl(
                "get", "events", "-n", ns, "--field-selector", "involvedObject.name=chest-auc", "-o", "json"
            )
            reasons = {e["reason"] for e in json.loads(events.stdout)["items"]}
            assert {"RunStarted", "RunSucceeded"} <= reasons, reasons

            port = operator.metrics_port()
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert (
                f'lightbox_validation_metric{{bound="lower",metric="auc",namespace="{ns}",validation="chest-auc"}}'
                in text
            )
            assert f'lightbox_namespace_isolated{{namespace="{ns}",policy="{pol}"}} 1.0' in text
            assert 'lightbox_runs_total{reason="Succeeded"} 1.0' in text

            # The audit trail: one record of the run, readable in a table.
            (entry,) = audit_records(api_client, ns)
            assert entry["spec"]["run"] == run
            assert entry["spec"]["validation"] == {
                "name": "chest-auc",
                "uid": final["metadata"]["uid"],
                "namespace": ns,
            }
            assert entry["spec"]["dataset"]["contentHash"] == data["contentHash"]
            assert entry["spec"]["algorithm"]["version"] == "1.0.0" and entry["spec"]["policy"] == pol
            # Kept in the audit namespace, not the run's (docs/audit.md).
            rows = kubectl(
                "get", "auditrecords", "-n", AUDIT_NAMESPACE, "-l", f"lightbox.dev/validation-namespace={ns}"
            ).stdout.splitlines()
            assert "VALIDATION" in rows[0] and "SEQ" in rows[0] and "VERDICT" in rows[0]
            assert rows[1].split()[:5] == [entry["metadata"]["name"], "chest-auc", "1", "1", "Succeeded"]

            # The report quality staff read, from the same objects.
            report = lightbox("report", "chest-auc", "-n", ns, "--kubeconfig", str(kubeconfig))
            assert report.returncode == 0, report.stderr
            assert f"Verdict: **{run['verdict']}**" in report.stdout and data["contentHash"] in report.stdout
            history = report.stdout.split("## History (audit trail)")[1]
            assert "| 1 | " in history and run["verdict"] in history
            missing = lightbox("report", "no-such-validation", "-n", ns, "--kubeconfig", str(kubeconfig))
            assert missing.returncode == 1 and "Validation no-such-validation not found" in missing.stderr

            # Deleting the Validation takes its Job and NetworkPolicy with it (owner references).
            assert kubectl("delete", "validation", "chest-auc", "-n", ns, "--wait=true", timeout=60).returncode == 0
            wait_for(lambda: jobs(api_client, ns), lambda js: not js, timeout=60, what="the Job to be collected")
            wait_for(
                lambda: [n for n in network_policies(api_client, ns) if n["metadata"]["name"] == "chest-auc-r1"],
                lambda left: not left,
                timeout=60,
                what="the NetworkPolicy to be collected",
            )
            # ...but not its history.
            assert [a["metadata"]["name"] for a in audit_records(api_client, ns)] == [entry["metadata"]["name"]]
    finally:
        operator.stop()
        delete_policy(api_client, pol)


def lightbox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightbox", *args], capture_output=True, text=True, timeout=120)


def get_policy(api_client, name):
    from operator_harness import custom

    return custom(api_client).get_cluster_custom_object("lightbox.dev", "v1alpha1", "sandboxpolicies", name)
