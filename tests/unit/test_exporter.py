"""Prometheus metrics: per-instance registry, per-validation metrics with bounds."""

from __future__ import annotations

import urllib.request

from lightbox.api.results import MetricValue, ScoreReport
from lightbox.operator.exporter import Exporter


def test_records_metrics_with_bounds_verdict_and_reasons():
    exporter = Exporter()
    report = ScoreReport(task="classification", cases=10, scored=10,
                         metrics={"auc": MetricValue(value=0.91, lower=0.85, upper=0.95), "sensitivity": MetricValue(value=0.8)})
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
