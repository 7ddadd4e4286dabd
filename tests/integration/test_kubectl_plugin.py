"""`kubectl lightbox` against the real control plane: status -A -o json, the namespace taken from
the kubeconfig context when -n is absent, runs, report --html, and logs refusing the vendor step."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from operator_harness import algorithm, apply, dataset, image, validation

pytestmark = pytest.mark.integration

RUN = {
    "name": "chest-auc-r1", "number": 1, "phase": "Succeeded", "reason": "Succeeded", "cases": 120, "scored": 118,
    "verdict": "Passed", "finishedAt": "2026-11-30T03:05:00Z",
    "metrics": {"auc": {"value": 0.912, "lower": 0.861, "upper": 0.95, "method": "delong"},
                "sensitivity": {"value": 0.8, "lower": 0.7, "upper": 0.87, "method": "wilson"},
                "specificity": {"value": 0.85, "lower": 0.78, "upper": 0.9, "method": "wilson"}},
    "roc": [[0.0, 0.0], [0.1, 0.55], [0.2, 0.8], [1.0, 1.0]],
}


def plugin(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The installed entry point, as kubectl would find it on PATH (kubectl-lightbox).
    exe = shutil.which("kubectl-lightbox", path=str(Path(sys.executable).parent))
    assert exe, "kubectl-lightbox is not installed next to this Python (pip install -e .)"
    return subprocess.run([exe, *args, "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, timeout=120)


def _seed(api_client, kubectl, ns: str, name: str, status: dict) -> None:
    from kubernetes import client

    apply(
        kubectl,
        ns,
        dataset(),
        algorithm("classifier", image("classifier")),
        validation(name, "classifier", schedule="0 3 * * *"),
    )
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        "lightbox.dev", "v1alpha1", ns, "validations", name, {"status": status}
    )


def test_status_runs_and_namespace_from_the_context(api_client, kubeconfig, kubectl, namespace, tmp_path) -> None:
    _seed(api_client, kubectl, namespace, "chest-auc", {
        "phase": "Scheduled", "verdict": "Passed", "summary": "auc 0.912 [0.861, 0.950]",
        "nextRunTime": "2026-12-01T03:00:00Z", "runs": [RUN],
    })
    every = plugin(kubeconfig, "status", "-A", "-o", "json")
    assert every.returncode == 0, every.stderr
    rows = [r for r in json.loads(every.stdout)["items"] if r["namespace"] == namespace]
    assert rows == [{
        "namespace": namespace, "name": "chest-auc", "phase": "Scheduled", "latestRun": "chest-auc-r1",
        "latestRunPhase": "Succeeded", "verdict": "Passed", "metric": "auc 0.912 [0.861, 0.950]",
        "schedule": "0 3 * * *", "nextRunTime": "2026-12-01T03:00:00Z",
    }]

    # A kubeconfig whose current context names the namespace: no -n needed, as with kubectl.
    scoped = tmp_path / "kubeconfig"
    config = yaml.safe_load(kubeconfig.read_text())
    for ctx in config["contexts"]:
        ctx["context"]["namespace"] = namespace
    scoped.write_text(yaml.safe_dump(config))
    mine = plugin(scoped, "status", "-o", "json")
    assert mine.returncode == 0, mine.stderr
    assert [r["name"] for r in json.loads(mine.stdout)["items"]] == ["chest-auc"]
    # The original kubeconfig has no namespace in its context: "default", which holds no Validation.
    default = plugin(kubeconfig, "status", "-o", "json")
    assert default.returncode == 0 and json.loads(default.stdout)["items"] == []

    table = plugin(scoped, "runs", "chest-auc")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["#", "NAME", "PHASE"] and row.split()[:3] == ["1", "chest-auc-r1", "Succeeded"]
    assert "auc=0.912" in row


def test_report_html_and_logs_refuse_the_vendor_step(api_client, kubeconfig, kubectl, namespace, tmp_path) -> None:
    _seed(api_client, kubectl, namespace, "chest-auc", {"phase": "Succeeded", "verdict": "Passed", "runs": [RUN]})
    page = tmp_path / "report.html"
    done = plugin(kubeconfig, "report", "chest-auc", "-n", namespace, "--html", str(page))
    assert done.returncode == 0, done.stderr
    html = page.read_text()
    assert "<svg" in html and "AUC 0.912" in html and "[0.861, 0.950]" in html and "Lightbox Reference" in html

    refused = plugin(kubeconfig, "logs", "chest-auc-r1", "-n", namespace, "--step", "vendor")
    assert refused.returncode == 2 and "refused" in refused.stderr and "covert-channel" in refused.stderr
    missing = plugin(kubeconfig, "logs", "chest-auc-r1", "-n", namespace, "--step", "score")
    assert missing.returncode == 1 and "no pod for run chest-auc-r1" in missing.stderr
