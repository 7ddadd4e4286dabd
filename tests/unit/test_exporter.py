"""Prometheus metrics: per-instance registry, per-validation metrics with bounds."""

from __future__ import annotations

import urllib.request

from lightbox.api.results import MetricValue, ScoreReport
from lightbox.operator.exporter import Exporter


def test_records_metrics_with_bounds_verdict_and_reasons():
    exporter = Exporter()
    report = ScoreReport(
        task="classification",
        cases=10,
        scored=10,
        metrics={"auc": MetricValue(value=0.91, lower=0.85, upper=0.95), "sensitivity": MetricValue(value=0.8)},
    )
    exporter.record_report("region", "chest", report, "Passed")
    exporter.record_finished("Succeeded")
    exporter.record_finished("VendorExitCode")
    exporter.record_finished("VendorExitCode")
    exporter.record_isolation("region", "default", True)
    text = exporter.render().decode()
    assert 'lightbox_validation_metric{bound="point",metric="auc",namespace="region",validation="chest"} 0.91' in text
    assert 'lightbox_validation_metric{bound="lower",metric="auc",namespace="region",validation="chest"} 0.85' in text
    assert 'lightbox_validation_metric{bound="upper",metric="auc",namespace="region",validation="chest"} 0.95' in text
    assert 'bound="lower",metric="sensitivity"' not in text
    assert 'lightbox_validation_verdict{namespace="region",validation="chest"} 1.0' in text
    assert 'lightbox_runs_total{reason="VendorExitCode"} 2.0' in text
    assert 'lightbox_namespace_isolated{namespace="region",policy="default"} 1.0' in text

    exporter.forget_validation("region", "chest")
    text = exporter.render().decode()
    assert 'validation="chest"' not in text


def test_instances_do_not_share_state_and_serve_http():
    first, second = Exporter(), Exporter()
    first.record_finished("Succeeded")
    assert "lightbox_runs_total{" not in second.render().decode()
    port = first.serve(0, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'lightbox_runs_total{reason="Succeeded"} 1.0' in body


def _samples(exporter: Exporter, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Series of one family as prometheus-client's own text parser reads them back."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(exporter.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_forget_validation_drops_that_validation_only_in_its_namespace():
    from lightbox.api.audit import CohortShift, Drift

    exporter = Exporter()
    report = ScoreReport(task="classification", cases=10, scored=10,
                         metrics={"auc": MetricValue(value=0.9, lower=0.8, upper=0.95)})
    # The same name in another namespace, and a name that starts like it, must survive.
    for namespace, name in (("region", "chest"), ("other", "chest"), ("region", "chest-2")):
        exporter.record_report(namespace, name, report, "Passed")
        drift = Drift(baseline_run=1, baseline_sequence=1, compared=["auc"],
                      input_shift=[CohortShift(dimension="sex", psi=0.3, p_value=0.01)])
        exporter.record_drift(namespace, name, drift)

    exporter.forget_validation("region", "chest")

    for family in ("lightbox_validation_metric", "lightbox_validation_verdict",
                   "lightbox_validation_degraded", "lightbox_validation_input_shift"):
        left = {(dict(k)["namespace"], dict(k)["validation"]) for k in _samples(exporter, family)}
        assert left == {("other", "chest"), ("region", "chest-2")}, family
    # 3 bounds of auc for each of the two survivors
    assert len(_samples(exporter, "lightbox_validation_metric")) == 6


def test_runs_and_gpus_held_are_read_when_scraped_and_the_limit_when_decided():
    from lightbox.operator.runs import Capacity

    exporter = Exporter()
    # namespace -> {unfinished run Job: GPUs}, as the scheduler keeps it from the Job watch
    active = {"radiology": {"a-r1": 1, "b-r1": 2}, "pathology": {}}
    exporter.count_active_jobs(lambda: active)
    exporter.record_capacity("radiology", Capacity(active_runs=0, gpus_in_use=0, max_runs=4, max_gpus=8))
    assert _samples(exporter, "lightbox_gpus_in_use") == {
        (("namespace", "radiology"),): 3.0,
        (("namespace", "pathology"),): 0.0,
    }
    assert _samples(exporter, "lightbox_runs_active") == {
        (("namespace", "radiology"),): 2.0,
        (("namespace", "pathology"),): 0.0,
    }
    assert _samples(exporter, "lightbox_gpus_limit") == {(("namespace", "radiology"),): 8.0}
    # A Job finishes after the start decision: the next scrape says so, with no decision in between.
    del active["radiology"]["b-r1"]
    assert _samples(exporter, "lightbox_gpus_in_use")[(("namespace", "radiology"),)] == 1.0
    assert _samples(exporter, "lightbox_runs_active")[(("namespace", "radiology"),)] == 1.0


def test_without_a_source_the_families_exist_but_hold_no_series():
    families = {f.name: f for f in Exporter().registry.collect()}
    assert families["lightbox_gpus_in_use"].samples == [] and families["lightbox_runs_active"].samples == []
