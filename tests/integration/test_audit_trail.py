"""The audit trail on the real API server: records land in the audit namespace, outlive the run
namespace, and `lightbox audit verify --cluster` names a record removed or replaced there."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import factories
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_harness import (
    AUDIT_NAMESPACE,
    Operator,
    apply_sample,
    audit_records,
    finished,
    get,
    local_runner,
    runs_of,
    validation,
    wait_for,
)

from lightbox.api.results import MetricValue
from lightbox.api.validation import RunRecord
from lightbox.operator import audit

pytestmark = pytest.mark.integration


def lightbox(kubeconfig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lightbox", *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=120,
    )


def lightbox_plain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lightbox", *args], capture_output=True, text=True, timeout=120)


def test_a_run_is_recorded_in_the_audit_namespace_and_outlives_its_namespace(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns = namespace
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with local_runner(api_client, claim, tmp_path / "runner"):
            apply_sample(kubectl, ns, f"audit-{ns}", validation("chest-auc", "classifier"), pooledEvidence=True)
            final = wait_for(lambda: get(api_client, "validations", ns, "chest-auc"), finished, timeout=150,
                             what="the run to finish", operator=operator)
    finally:
        operator.stop()
    run = runs_of(final)[-1]
    (record,) = audit_records(api_client, ns)
    assert record["metadata"]["namespace"] == AUDIT_NAMESPACE
    assert record["spec"]["run"] == run
    assert record["spec"]["validation"] == {"name": "chest-auc", "uid": final["metadata"]["uid"], "namespace": ns}
    assert record["spec"]["chain"] == {"id": final["metadata"]["uid"], "sequence": 1}
    # Nothing of the trail is left in the run namespace.
    local = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "lightbox.dev", "v1alpha1", ns, "auditrecords"
    )
    assert local["items"] == []

    client.CoreV1Api(api_client).delete_namespace(ns)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # gone for good, not just terminating
        try:
            client.CoreV1Api(api_client).read_namespace(ns)
        except ApiException as exc:
            assert exc.status == 404
            break
        time.sleep(1)
    else:
        pytest.fail(f"namespace {ns} was not deleted within 120 s")
    (kept,) = audit_records(api_client, ns)
    assert kept["spec"] == record["spec"]

    exported = tmp_path / "trail.jsonl"
    result = lightbox(kubeconfig, "audit", "export", "-n", ns, "-f", str(exported))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["spec"]["hash"] for line in exported.read_text().splitlines()] == [record["spec"]["hash"]]
    result = lightbox(kubeconfig, "audit", "verify", str(exported))
    assert result.returncode == 0, result.stdout + result.stderr

    # The run's evidence, kept under the record's hash, exported signed after its namespace is gone.
    evidence = record["spec"]["evidence"]
    assert sum(c for *_, c in evidence["positives"]) + sum(c for *_, c in evidence["negatives"]) == run["scored"]
    assert lightbox_plain("evidence", "keygen", "-o", str(tmp_path / "region")).returncode == 0
    result = lightbox(kubeconfig, "evidence", "export", "chest-auc", "-n", ns, "--key", str(tmp_path / "region.key"),
                      "--region", "north", "-o", str(tmp_path / "north.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "north.json").read_text())["payload"]["auditRecord"]["hash"] == record["spec"]["hash"]
    result = lightbox_plain("federate", str(tmp_path / "north.json"), "--trust", str(tmp_path / "region.pub"))
    assert result.returncode == 0 and "pooled AUC" in result.stdout, result.stderr


def _write_chain(
    api_client, namespace_label: str, length: int, start: datetime = datetime(2026, 6, 1, tzinfo=UTC)
) -> list[dict]:
    """A chain written as the operator writes one (operator/audit.py), for a Validation that never ran here."""
    v = factories.validation(acceptance=[{"metric": "auc", "threshold": 0.8, "bound": "lower"}], metrics=["auc"])
    v.metadata |= {"uid": str(uuid.uuid4()), "namespace": namespace_label}
    api = client.CustomObjectsApi(api_client)
    written: list[dict] = []
    for number in range(1, length + 1):
        run = RunRecord(
            name=f"chest-v1-r{number}", number=number, phase="Succeeded", reason="Succeeded",
            created_at=start + timedelta(days=number), finished_at=start + timedelta(days=number, minutes=5),
            metrics={"auc": MetricValue(value=0.9, lower=0.84, upper=0.95, method="delong")}, verdict="Passed",
        )
        body = audit.audit_record(v, run, None, None, "region", "lightbox-operator/test", chain_records=written)
        written.append(
            api.create_namespaced_custom_object("lightbox.dev", "v1alpha1", AUDIT_NAMESPACE, "auditrecords", body)
        )
    return written


@pytest.fixture
def audit_namespace(api_client):
    core = client.CoreV1Api(api_client)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=AUDIT_NAMESPACE)))
    except ApiException as exc:
        if exc.status != 409:
            raise
    return AUDIT_NAMESPACE


def test_verify_on_the_cluster_names_a_record_removed_there(api_client, kubeconfig, audit_namespace):
    label = f"removed-{uuid.uuid4().hex[:8]}"  # a namespace name only the records know
    records = _write_chain(api_client, label, 4)
    result = lightbox(kubeconfig, "audit", "verify", "--cluster", "-n", label)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 records verified" in result.stdout

    victim = records[1]["metadata"]["name"]
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "lightbox.dev", "v1alpha1", audit_namespace, "auditrecords", victim
    )
    result = lightbox(kubeconfig, "audit", "verify", "--cluster", "-n", label)
    assert result.returncode == 1
    assert "record #2 removed" in result.stderr, result.stderr


def test_verify_on_the_cluster_names_a_record_replaced_by_someone_allowed_to_delete_and_create(
    api_client, kubeconfig, audit_namespace
):
    # The CEL rule refuses an edit in place; whoever may delete and create can still swap a
    # record for another, even with a correct hash of its own. The next record's link shows it.
    label = f"replaced-{uuid.uuid4().hex[:8]}"
    records = _write_chain(api_client, label, 3)
    api = client.CustomObjectsApi(api_client)
    original = records[1]
    api.delete_namespaced_custom_object(
        "lightbox.dev", "v1alpha1", audit_namespace, "auditrecords", original["metadata"]["name"]
    )
    forged = {"apiVersion": "lightbox.dev/v1alpha1", "kind": "AuditRecord",
              "metadata": {"name": original["metadata"]["name"], "labels": original["metadata"]["labels"]},
              "spec": dict(original["spec"])}
    forged["spec"]["run"] = {**original["spec"]["run"], "verdict": "Failed"}
    from lightbox.auditchain import seal

    forged["spec"] = seal({k: v for k, v in forged["spec"].items() if k != "hash"})
    api.create_namespaced_custom_object("lightbox.dev", "v1alpha1", audit_namespace, "auditrecords", forged)
    result = lightbox(kubeconfig, "audit", "verify", "--cluster", "-n", label)
    assert result.returncode == 1
    assert "record #2" in result.stderr and "altered" in result.stderr, result.stderr


def test_prune_removes_expired_records_oldest_first_after_a_cut_and_the_trail_still_verifies(
    api_client, kubeconfig, audit_namespace
):
    label = f"pruned-{uuid.uuid4().hex[:8]}"
    records = _write_chain(api_client, label, 3, start=datetime(2025, 1, 1, tzinfo=UTC))  # 2 to 4 January 2025
    api = client.CustomObjectsApi(api_client)

    def names() -> list[str]:
        items = api.list_namespaced_custom_object("lightbox.dev", "v1alpha1", audit_namespace, "auditrecords",
                                                  label_selector=f"lightbox.dev/validation-namespace={label}")["items"]
        return sorted(i["metadata"]["name"] for i in items)

    before = names()
    dry = lightbox(kubeconfig, "audit", "prune", "--dry-run", "-n", label)
    assert dry.returncode == 0, dry.stderr
    assert names() == before
    # records[:-1] are long expired; the newest is never removed
    result = lightbox(kubeconfig, "audit", "prune", "-n", label)
    assert result.returncode == 0, result.stderr
    left = names()
    cut = f"{records[0]['spec']['chain']['id']}-4"  # the RetentionCut record, next in the chain
    assert left == sorted([records[-1]["metadata"]["name"], cut])
    assert (
        api.get_namespaced_custom_object("lightbox.dev", "v1alpha1", audit_namespace, "auditrecords", cut)["spec"][
            "cut"
        ]["firstKept"]
        == 3
    )
    result = lightbox(kubeconfig, "audit", "verify", "--cluster", "-n", label)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lightbox(kubeconfig, "audit", "prune", "--retention-days", "30").returncode == 2  # below six months
