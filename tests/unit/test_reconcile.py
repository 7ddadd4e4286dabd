"""The controller's decisions against an in-memory API server: schedules, history, adoption.

The integration tests run the real thing; these pin the logic that would take
hours of wall clock there (cron ticks, pruning after many runs).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from lightbox import auditchain
from lightbox.api.results import MetricValue, ScoreReport
from lightbox.operator import clock as operator_clock
from lightbox.operator import validations
from lightbox.operator.config import OperatorConfig
from lightbox.operator.exporter import Exporter
from lightbox.operator.kube import KubeError
from lightbox.operator.runtime import Runtime

NS = "region"
DIGEST = "sha256:" + "ab" * 32


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class FakeKube:
    """Enough of the API server for the reconcilers: objects by (plural, namespace, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.versions = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    @staticmethod
    def _parse(url: str) -> tuple[str, str | None, str | None, str | None]:
        parts = url.strip("/").split("/")
        parts = parts[2:] if parts[0] == "api" else parts[3:]
        namespace = None
        if parts[0] == "namespaces" and len(parts) > 2:
            namespace, parts = parts[1], parts[2:]
        plural = parts[0]
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        return plural, namespace, name, sub

    def _stamp(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self.versions))

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta.setdefault("generation", 1)
        self._stamp(obj)
        self.objects[(plural, meta.get("namespace"), meta["name"])] = obj
        return obj

    async def get(self, url: str) -> dict[str, Any] | None:
        plural, namespace, name, _ = self._parse(url)
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def list(self, url: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        plural, namespace, _, _ = self._parse(url)
        wanted = dict(kv.split("=", 1) for kv in label_selector.split(",")) if label_selector else {}
        out = []
        for (kind, ns, _), obj in self.objects.items():
            labels = obj["metadata"].get("labels") or {}
            if (
                kind == plural
                and (namespace is None or ns == namespace)
                and all(labels.get(k) == v for k, v in wanted.items())
            ):
                out.append(copy.deepcopy(obj))
        return out

    async def create(self, url: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        plural, namespace, _, _ = self._parse(url)
        if plural == "events":
            self.events.append(body)
            return body, True
        key = (plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            return copy.deepcopy(self.objects[key]), False
        body = copy.deepcopy(body)
        body["metadata"]["namespace"] = namespace
        return self.put(plural, body), True

    async def patch(self, url: str, body: dict[str, Any], kind: str = "merge") -> dict[str, Any] | None:
        plural, namespace, name, _ = self._parse(url)
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            return None
        _merge(obj, body)
        self._stamp(obj)
        return copy.deepcopy(obj)

    async def delete(self, url: str, propagation: str = "Background") -> bool:
        plural, namespace, name, _ = self._parse(url)
        return self.objects.pop((plural, namespace, name), None) is not None

    async def close(self) -> None:
        pass


def setup_cluster(schedule: str | None = None, history: int = 10) -> FakeKube:
    kube = FakeKube()
    kube.put("sandboxpolicies", {
        "apiVersion": "lightbox.dev/v1alpha1", "kind": "SandboxPolicy", "metadata": {"name": "default"},
        "spec": {"allowedRegistries": ["registry.vendor.example"], "isolationProbe": {"required": False}},
    })
    kube.put("algorithms", {
        "apiVersion": "lightbox.dev/v1alpha1", "kind": "Algorithm", "metadata": {"name": "chest", "namespace": NS},
        "spec": {"vendor": "A", "product": "B", "version": "1", "image": f"registry.vendor.example/a/b@{DIGEST}",
                 "task": "classification", "modality": "DX", "bodyPart": "CHEST", "labels": ["n", "p"],
                 "positiveLabel": "p", "resources": {"gpus": 0}},
    })
    kube.put("datasets", {
        "apiVersion": "lightbox.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "data", "namespace": NS},
        "spec": {"studies": {"claimName": "c", "subPath": "s"}, "groundTruth": {"claimName": "c", "subPath": "t"}},
        "status": {"phase": "Verified", "verified": True, "contentHash": "h", "observedGeneration": 1},
    })
    spec: dict[str, Any] = {"algorithmRef": {"name": "chest"}, "datasetRef": {"name": "data"}, "historyLimit": history,
                            "metrics": ["auc"], "acceptance": [{"metric": "auc", "threshold": 0.7, "bound": "lower"}]}
    if schedule:
        spec["schedule"] = schedule
    kube.put("validations", {"apiVersion": "lightbox.dev/v1alpha1", "kind": "Validation",
                             "metadata": {"name": "val", "namespace": NS}, "spec": spec})
    return kube


def make_runtime(kube: FakeKube) -> Runtime:
    runtime = Runtime(config=OperatorConfig(), kube=kube, exporter=Exporter())  # type: ignore[arg-type]
    runtime.scheduler.unsynced = set()
    return runtime


def finish(kube: FakeKube, run: str, report: ScoreReport | None = None, vendor_exit: int = 0) -> None:
    """Mark the run's Job complete and give it a finished pod, as the Job controller and a kubelet would."""
    job = kube.objects[("jobs", NS, run)]
    ok = vendor_exit == 0
    job["status"] = {"conditions": [{"type": "Complete" if ok else "Failed", "status": "True"}]}
    message = (report or REPORT).to_termination_message()
    statuses = [{"name": "stage", "state": {"terminated": {"exitCode": 0}}},
                {"name": "vendor", "state": {"terminated": {"exitCode": vendor_exit}}}]
    main = [{"name": "score", "state": {"terminated": {"exitCode": 0, "message": message}}}] if ok else []
    kube.put(
        "pods",
        {
            "metadata": {
                "name": f"{run}-pod",
                "namespace": NS,
                "labels": {**job["spec"]["template"]["metadata"]["labels"], "batch.kubernetes.io/job-name": run},
            },
            "status": {
                "phase": "Succeeded" if ok else "Failed",
                "initContainerStatuses": statuses,
                "containerStatuses": main,
            },
        },
    )


REPORT = ScoreReport(
    task="classification", cases=40, scored=40, metrics={"auc": MetricValue(value=0.9, lower=0.82, upper=0.95)}
)


def status(kube: FakeKube) -> dict[str, Any]:
    return kube.objects[("validations", NS, "val")].get("status") or {}


@pytest.fixture
def clock(monkeypatch):
    now = {"t": datetime(2026, 1, 1, 0, 30, tzinfo=UTC)}
    monkeypatch.setattr(operator_clock, "utcnow", lambda: now["t"])
    return now


def run(coro):
    return asyncio.run(coro)


def test_one_shot_run_from_start_to_verdict(clock):
    kube = setup_cluster()
    runtime = make_runtime(kube)
    run(validations.reconcile_validation(runtime, NS, "val"))
    assert ("jobs", NS, "val-r1") in kube.objects and ("networkpolicies", NS, "val-r1") in kube.objects
    assert [r["phase"] for r in status(kube)["runs"]] == ["Running"]
    assert status(kube)["phase"] == "Running"

    run(validations.reconcile_validation(runtime, NS, "val"))  # nothing new: no second Job
    assert len([k for k in kube.objects if k[0] == "jobs"]) == 1

    finish(kube, "val-r1")
    run(validations.reconcile_validation(runtime, NS, "val"))
    st = status(kube)
    (record,) = st["runs"]
    assert record["phase"] == "Succeeded" and record["metrics"]["auc"]["lower"] == 0.82
    assert record["verdict"] == "Passed" and st["verdict"] == "Passed"
    assert st["summary"] == "auc 0.900 [0.820, 0.950]"
    assert st["phase"] == "Succeeded"
    assert {e["reason"] for e in kube.events} == {"RunStarted", "RunSucceeded"}
    text = runtime.exporter.render().decode()
    assert 'lightbox_validation_metric{bound="lower",metric="auc",namespace="region",validation="val"} 0.82' in text

    run(validations.reconcile_validation(runtime, NS, "val"))  # one-shot: no further runs
    assert len(status(kube)["runs"]) == 1
    (entry,) = audit_records(kube)
    assert entry["spec"]["run"] == record  # the same record as status, kept for good
    assert entry["spec"]["validation"] == {"name": "val", "uid": "uid-val", "namespace": NS}


def audit_records(kube: FakeKube) -> list[dict[str, Any]]:
    """The audit trail, kept in its own namespace (never the Validation's), in chain order."""
    found = [
        obj for (plural, ns, _), obj in kube.objects.items() if plural == "auditrecords" and ns == "lightbox-audit"
    ]
    return sorted(found, key=lambda obj: obj["spec"]["chain"]["sequence"])


def test_schedule_ticks_and_history_limit_prunes_jobs(clock):
    kube = setup_cluster(schedule="0 * * * *", history=2)
    runtime = make_runtime(kube)
    run(validations.reconcile_validation(runtime, NS, "val"))
    assert "runs" not in status(kube) and status(kube)["phase"] == "Scheduled"
    assert status(kube)["nextRunTime"].startswith("2026-01-01T01:00:00")

    for hour in (1, 2, 3):
        clock["t"] = datetime(2026, 1, 1, hour, 0, 5, tzinfo=UTC)
        run(validations.reconcile_validation(runtime, NS, "val"))
        finish(kube, f"val-r{hour}")
        run(validations.reconcile_validation(runtime, NS, "val"))

    st = status(kube)
    assert [r["name"] for r in st["runs"]] == ["val-r2", "val-r3"]
    assert [r["scheduledFor"][:19] for r in st["runs"]] == ["2026-01-01T02:00:00", "2026-01-01T03:00:00"]
    assert ("jobs", NS, "val-r1") not in kube.objects and ("networkpolicies", NS, "val-r1") not in kube.objects
    assert ("jobs", NS, "val-r3") in kube.objects
    assert st["phase"] == "Scheduled"
    # History is pruned; the audit trail is not.
    assert [a["spec"]["run"]["name"] for a in audit_records(kube)] == ["val-r1", "val-r2", "val-r3"]
    assert [a["spec"]["chain"]["sequence"] for a in audit_records(kube)] == [1, 2, 3]
    assert auditchain.verify(audit_records(kube)) == []

    # Missed ticks collapse into one run.
    clock["t"] = datetime(2026, 1, 1, 9, 10, tzinfo=UTC)
    run(validations.reconcile_validation(runtime, NS, "val"))
    assert [r["name"] for r in status(kube)["runs"]][-1] == "val-r4"
    assert status(kube)["runs"][-1]["scheduledFor"][:19] == "2026-01-01T09:00:00"


def test_out_of_range_schedule_is_blocked_not_retried_forever(clock):
    kube = setup_cluster(schedule="61 * * * *")
    delay = run(validations.reconcile_validation(make_runtime(kube), NS, "val"))
    st = status(kube)
    admitted = {c["type"]: c for c in st["conditions"]}["Admitted"]
    assert (st["phase"], admitted["reason"]) == ("Blocked", "InvalidSchedule")
    assert "spec.schedule" in admitted["message"] and st.get("nextRunTime") is None
    assert not [k for k in kube.objects if k[0] == "jobs"]
    assert delay is not None and delay > 5  # a normal resync, not the 5 s error retry


def test_suspended_validation_starts_nothing(clock):
    kube = setup_cluster()
    kube.objects[("validations", NS, "val")]["spec"]["suspend"] = True
    run(validations.reconcile_validation(make_runtime(kube), NS, "val"))
    assert not [k for k in kube.objects if k[0] == "jobs"]


def test_a_job_without_a_record_is_adopted_not_duplicated(clock):
    """Status lost between creating the Job and recording it: the Job is the truth."""
    kube = setup_cluster()
    runtime = make_runtime(kube)
    run(validations.reconcile_validation(runtime, NS, "val"))
    kube.objects[("validations", NS, "val")].pop("status")
    run(validations.reconcile_validation(runtime, NS, "val"))
    assert [r["name"] for r in status(kube)["runs"]] == ["val-r1"]
    assert len([k for k in kube.objects if k[0] == "jobs"]) == 1


def test_vendor_failure_is_recorded_with_reason_and_a_warning_event(clock):
    kube = setup_cluster()
    runtime = make_runtime(kube)
    run(validations.reconcile_validation(runtime, NS, "val"))
    finish(kube, "val-r1", vendor_exit=7)
    run(validations.reconcile_validation(runtime, NS, "val"))
    (record,) = status(kube)["runs"]
    assert (record["phase"], record["reason"]) == ("Failed", "VendorExitCode")
    assert status(kube)["summary"] == "VendorExitCode"
    warning = [e for e in kube.events if e["type"] == "Warning"]
    assert warning and warning[0]["reason"] == "VendorExitCode"
    (entry,) = audit_records(kube)
    assert (entry["spec"]["run"]["phase"], entry["spec"]["run"]["reason"]) == ("Failed", "VendorExitCode")
    assert 'lightbox_runs_total{reason="VendorExitCode"} 1.0' in runtime.exporter.render().decode()


def test_dataset_deleted_mid_run_stops_the_job(clock):
    kube = setup_cluster()
    runtime = make_runtime(kube)
    run(validations.reconcile_validation(runtime, NS, "val"))
    del kube.objects[("datasets", NS, "data")]
    run(validations.reconcile_validation(runtime, NS, "val"))
    (record,) = status(kube)["runs"]
    assert record["reason"] == "DatasetDeleted"
    (entry,) = audit_records(kube)
    assert entry["spec"]["dataset"] == {"name": "data"}  # gone: only its name is known
    assert ("jobs", NS, "val-r1") not in kube.objects
    assert status(kube)["phase"] == "Blocked"


def test_nothing_starts_before_the_start_up_listing_is_reconciled(clock):
    kube = setup_cluster()
    runtime = make_runtime(kube)
    runtime.scheduler.unsynced = {(NS, "other")}
    run(validations.reconcile_validation(runtime, NS, "val"))
    assert [r["phase"] for r in status(kube)["runs"]] == ["Queued"]
    assert not [k for k in kube.objects if k[0] == "jobs"]


def test_status_write_is_skipped_when_nothing_changed(clock):
    kube = setup_cluster()
    runtime = make_runtime(kube)
    run(validations.reconcile_validation(runtime, NS, "val"))
    version = kube.objects[("validations", NS, "val")]["metadata"]["resourceVersion"]
    run(validations.reconcile_validation(runtime, NS, "val"))
    assert kube.objects[("validations", NS, "val")]["metadata"]["resourceVersion"] == version
    assert json.dumps(status(kube))  # plain JSON



def test_a_job_the_api_server_refuses_ends_the_run_with_its_message(clock):
    kube = setup_cluster()
    original = kube.create

    async def refuse_jobs(url, body):
        if "/jobs" in url:
            raise KubeError(422, 'Job.batch "val-r1" is invalid: spec.template: forbidden', "POST", url)
        return await original(url, body)

    kube.create = refuse_jobs  # type: ignore[method-assign]
    run(validations.reconcile_validation(make_runtime(kube), NS, "val"))
    (record,) = status(kube)["runs"]
    assert (record["phase"], record["reason"]) == ("Failed", "RunRejected")
    assert "forbidden" in record["message"]


class Crash(Exception):
    pass


def test_a_crash_after_the_audit_write_leaves_status_saying_what_the_audit_trail_says(clock):
    kube = setup_cluster()
    runtime = make_runtime(kube)
    run(validations.reconcile_validation(runtime, NS, "val"))
    finish(kube, "val-r1")

    def crash(point: str) -> None:
        if point == "after-audit-write":
            raise Crash(point)

    runtime.crash = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        run(validations.reconcile_validation(runtime, NS, "val"))
    (entry,) = audit_records(kube)
    assert [r["phase"] for r in status(kube)["runs"]] == ["Running"]  # status was not written

    # Later, with the Job gone meanwhile: the recorded result stands, not "the Job was deleted".
    del kube.objects[("jobs", NS, "val-r1")]
    clock["t"] = clock["t"].replace(hour=5)
    restarted = make_runtime(kube)
    run(validations.reconcile_validation(restarted, NS, "val"))
    (record,) = status(kube)["runs"]
    assert record == entry["spec"]["run"] and record["phase"] == "Succeeded"
    assert len(audit_records(kube)) == 1
