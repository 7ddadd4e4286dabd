"""The real scheduler and controllers: GPU capacity, restart of the operator pod, cron ticks."""

from __future__ import annotations

import json

from operator_harness import apply, audit_records, finished, get, jobs, runs_of, validation, wait_for

from lightbox.devtools import node_chart
from lightbox.devtools.node_config import NODE_NAME


def _all_finished(api_client, ns, names):
    return lambda: [get(api_client, "validations", ns, n) for n in names]


def test_two_gpus_run_two_gpu_validations_and_the_third_waits(cluster, run_ns, chest, algo, kubectl, api_client):
    ns = run_ns
    patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "2"},
             {"op": "add", "path": "/status/allocatable/nvidia.com~1gpu", "value": "2"}]
    kubectl("patch", "node", NODE_NAME, "--subresource=status", "--type=json", "-p", json.dumps(patch), check=True)
    try:
        names = ["gpu-a", "gpu-b", "gpu-c"]
        apply(kubectl, ns, chest, algo("classifier", cluster.image("classifier"), gpus=1),
              *[validation(n, "classifier") for n in names])
        done = wait_for(_all_finished(api_client, ns, names), lambda vs: all(finished(v) for v in vs), 900,
                        "three GPU runs")
        assert [runs_of(v)[-1]["phase"] for v in done] == ["Succeeded"] * 3, [runs_of(v) for v in done]
        events = json.loads(kubectl("get", "events", "-n", ns, "--field-selector", "reason=FailedScheduling",
                                    "-o", "json", check=True).stdout)["items"]
        waited = {e["involvedObject"]["name"] for e in events if "Insufficient nvidia.com/gpu" in e["message"]}
        assert len(waited) >= 1, [e["message"] for e in events]
        pods = json.loads(kubectl("get", "pods", "-n", ns, "-o", "json", check=True).stdout)["items"]
        gpu_pods = [p for p in pods if any("nvidia.com/gpu" in (c.get("resources", {}).get("limits") or {})
                                           for c in p["spec"].get("initContainers", []))]
        assert len(gpu_pods) == 3 and all(p["spec"]["nodeName"] == NODE_NAME for p in gpu_pods)
    finally:
        unpatch = [{"op": "remove", "path": "/status/capacity/nvidia.com~1gpu"},
                   {"op": "remove", "path": "/status/allocatable/nvidia.com~1gpu"}]
        kubectl("patch", "node", NODE_NAME, "--subresource=status", "--type=json", "-p", json.dumps(unpatch))


def test_deleting_the_operator_pod_mid_run_finishes_the_run_once(cluster, run_ns, chest, algo, kubectl, api_client):
    ns = run_ns
    apply(kubectl, ns, chest, algo("classifier", cluster.image("classifier"), gpus=0),
          validation("restart", "classifier"))
    wait_for(lambda: jobs(api_client, ns), bool, 600, "the run's Job")
    old = node_chart.operator_pod(cluster.kubeconfig)["metadata"]["name"]
    kubectl("delete", "pod", "-n", node_chart.NAMESPACE, old, "--wait=false", check=True)
    final = wait_for(lambda: get(api_client, "validations", ns, "restart"), finished, 600, "the run after the restart")
    (run,) = runs_of(final)
    assert run["phase"] == "Succeeded", run
    assert [j["metadata"]["name"] for j in jobs(api_client, ns)] == ["restart-r1"]
    assert len(audit_records(api_client, ns)) == 1
    new = wait_for(lambda: node_chart.operator_pod(cluster.kubeconfig), lambda p: p["status"]["phase"] == "Running",
                   180, "the replacement operator pod")
    assert new["metadata"]["name"] != old


def test_a_cron_tick_becomes_one_run(cluster, run_ns, chest, algo, kubectl, api_client):
    ns = run_ns
    apply(kubectl, ns, chest, algo("classifier", cluster.image("classifier"), gpus=0),
          validation("monitor", "classifier", schedule="* * * * *", historyLimit=1))
    first = wait_for(lambda: get(api_client, "validations", ns, "monitor"),
                     lambda v: any(r["phase"] in {"Succeeded", "Failed"} for r in runs_of(v)), 600,
                     "the first tick's run")
    done = [r for r in runs_of(first) if r["phase"] in {"Succeeded", "Failed"}]
    assert done[0]["phase"] == "Succeeded", done
    assert done[0]["scheduledFor"].endswith(":00Z"), done[0]
    kubectl("patch", "validation", "monitor", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}', check=True)
