"""Drift on the real control plane: a scheduled Validation whose algorithm is made worse between
two runs turns Degraded, and the operator's Prometheus series says so."""

from __future__ import annotations

import urllib.request

import pytest
from operator_harness import (
    Operator,
    algorithm,
    apply,
    apply_sample,
    audit_records,
    get,
    image,
    local_runner,
    runs_of,
    validation,
    wait_for,
)

pytestmark = pytest.mark.integration


def _done(v: dict | None) -> list[dict]:
    return [r for r in runs_of(v) if r["phase"] in ("Succeeded", "Failed")]


def test_an_algorithm_made_worse_between_scheduled_runs_turns_the_validation_degraded(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns = namespace
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with local_runner(api_client, claim, tmp_path / "runner"):
            apply_sample(kubectl, ns, f"drift-{ns}", validation("monitor", "classifier", schedule="* * * * *"))
            first = wait_for(lambda: get(api_client, "validations", ns, "monitor"), lambda v: bool(_done(v)),
                             timeout=180, what="the first scheduled run", operator=operator)
            baseline = _done(first)[0]
            assert (baseline["phase"], baseline["verdict"]) == ("Succeeded", "Passed"), baseline

            apply(kubectl, ns, algorithm("classifier", image("classifier-inverted")))
            worse = wait_for(
                lambda: get(api_client, "validations", ns, "monitor"),
                lambda v: any("classifier-inverted" in (r.get("image") or "") for r in _done(v)),
                timeout=240, what="a run of the worsened algorithm", operator=operator,
            )
            conditions = {c["type"]: c for c in worse["status"]["conditions"]}
            assert conditions["Degraded"]["status"] == "True", conditions
            assert conditions["Degraded"]["reason"] == "MetricBelowBaseline"
            assert f"(run {baseline['number']})" in conditions["Degraded"]["message"]

            port = operator.metrics_port()
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert f'lightbox_validation_degraded{{metric="auc",namespace="{ns}",validation="monitor"}} 1.0' in text

            inverted = [
                a
                for a in audit_records(api_client, ns)
                if "classifier-inverted" in (a["spec"]["run"].get("image") or "")
            ]
            assert inverted and "auc" in [d["metric"] for d in inverted[0]["spec"]["drift"]["degraded"]]
    finally:
        operator.stop()
