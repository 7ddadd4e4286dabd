"""Drift through the controller: a scheduled Validation whose algorithm got worse turns Degraded
(condition, Warning Event, Prometheus series, kept in the AuditRecord); a moved input mix gives
InputShift; a run like its baseline raises neither."""

from __future__ import annotations

from datetime import UTC, datetime

from test_reconcile import NS, REPORT, audit_records, clock, finish, make_runtime, run, setup_cluster, status  # noqa: F401

from lightbox.api.results import MetricValue, ScoreReport
from lightbox.operator import validations

WORSE = ScoreReport(
    task="classification", cases=40, scored=40, metrics={"auc": MetricValue(value=0.6, lower=0.52, upper=0.68)}
)
MIX = {"sex": {"F": 300, "M": 300}, "manufacturer": {"GE": 200, "Siemens": 400}}


def conditions(kube) -> dict[str, dict]:
    return {c["type"]: c for c in status(kube).get("conditions") or []}


def one_run(kube, runtime, clock, hour: int, report: ScoreReport) -> None:
    clock["t"] = datetime(2026, 1, 1, hour, 0, 5, tzinfo=UTC)
    run(validations.reconcile_validation(runtime, NS, "val"))
    finish(kube, f"val-r{hour}", report)
    run(validations.reconcile_validation(runtime, NS, "val"))


def test_a_worse_algorithm_turns_the_validation_degraded_and_a_moved_mix_gives_input_shift(clock):
    kube = setup_cluster(schedule="0 * * * *")
    kube.objects[("datasets", NS, "data")]["status"]["cohort"] = MIX
    runtime = make_runtime(kube)
    run(validations.reconcile_validation(runtime, NS, "val"))

    one_run(kube, runtime, clock, 1, REPORT)  # passes: the baseline
    assert "Degraded" not in conditions(kube) and "drift" not in audit_records(kube)[0]["spec"]
    assert audit_records(kube)[0]["spec"]["dataset"]["cohort"] == MIX

    one_run(kube, runtime, clock, 2, REPORT)  # as good as the baseline
    assert (conditions(kube)["Degraded"]["status"], conditions(kube)["InputShift"]["status"]) == ("False", "False")

    one_run(kube, runtime, clock, 3, WORSE)
    degraded = conditions(kube)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "MetricBelowBaseline")
    assert "auc 0.600 [0.520, 0.680] vs baseline 0.900 (run 1)" in degraded["message"]
    assert any(e["reason"] == "MetricBelowBaseline" and e["type"] == "Warning" for e in kube.events)
    text = runtime.exporter.render().decode()
    assert 'lightbox_validation_degraded{metric="auc",namespace="region",validation="val"} 1.0' in text
    drift = audit_records(kube)[2]["spec"]["drift"]
    assert drift["baselineRun"] == 1 and [d["metric"] for d in drift["degraded"]] == ["auc"]

    kube.objects[("datasets", NS, "data")]["status"]["cohort"] = {
        "sex": {"F": 540, "M": 60},
        "manufacturer": MIX["manufacturer"],
    }
    one_run(kube, runtime, clock, 4, REPORT)
    shift = conditions(kube)["InputShift"]
    assert (shift["status"], shift["reason"]) == ("True", "CohortShifted") and shift["message"].startswith("sex: PSI ")
    assert conditions(kube)["Degraded"]["status"] == "False"  # the algorithm is back to its baseline
    text = runtime.exporter.render().decode()
    assert 'lightbox_validation_degraded{metric="auc",namespace="region",validation="val"} 0.0' in text
    assert 'lightbox_validation_input_shift{dimension="sex",namespace="region",validation="val"}' in text

    # The report says it, run by run.
    from lightbox import report
    from lightbox.api import AuditRecord, Validation

    validation = Validation.model_validate(kube.objects[("validations", NS, "val")])
    text = report.render(validation, None, None, [AuditRecord.model_validate(r) for r in audit_records(kube)])
    drift_lines = text.split("## Drift against the baseline")[1].strip().splitlines()
    assert drift_lines[0] == "- run 2 vs baseline run 1: no drift"
    assert drift_lines[1] == "- run 3 vs baseline run 1: Degraded: auc 0.600 [0.520, 0.680] vs 0.900"
    assert drift_lines[2].startswith("- run 4 vs baseline run 1: InputShift: sex PSI ")
