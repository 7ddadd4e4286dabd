"""The chart on the real node (issue 11): `helm test` passes, and a `helm upgrade` that rolls the
operator pod ends with the new pod Ready on the same pinned image and `helm test` passing again."""

from __future__ import annotations

import json
import re
import subprocess

from lightbox.devtools import binaries, node_chart

UPGRADE_ANNOTATION = "lightbox.test/upgraded"


def helm(cluster, *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries.ensure_helm(log=lambda m: None)), *args, "--namespace", node_chart.NAMESPACE,
                           "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True, timeout=timeout)


def test_helm_test_passes_then_an_upgrade_rolls_the_operator_and_it_passes_again(cluster, kubectl):
    # No --logs: the chart deletes a test pod that succeeded (hook-succeeded), so helm finds no logs to show.
    first = helm(cluster, "test", node_chart.RELEASE, "--timeout", "300s")
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"TEST SUITE:\s+lightbox-operator-test\n(.*\n){2}Phase:\s+Succeeded", first.stdout), first.stdout
    before = node_chart.operator_pod(cluster.kubeconfig)

    # A change to the pod template, so the upgrade replaces the operator pod (not a no-op revision).
    values = {**cluster.chart_values, "podAnnotations": {UPGRADE_ANNOTATION: "true"}}
    node_chart.helm_install(cluster.kubeconfig, values, workdir=cluster.base, log=lambda m: None)
    history = json.loads(helm(cluster, "history", node_chart.RELEASE, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history][-1] == (2, "deployed"), history

    after = node_chart.operator_pod(cluster.kubeconfig)
    assert after["metadata"]["name"] != before["metadata"]["name"]
    assert after["metadata"]["annotations"][UPGRADE_ANNOTATION] == "true"
    (status,) = after["status"]["containerStatuses"]
    assert status["ready"] is True and status["imageID"].endswith(cluster.images["lightbox"].digest), status

    again = helm(cluster, "test", node_chart.RELEASE, "--timeout", "300s")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "REVISION: 2" in again.stdout and "Phase:          Succeeded" in again.stdout, again.stdout
