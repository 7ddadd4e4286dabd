"""The real scheduler and controllers: GPU capacity, restart of the operator pod, cron ticks."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from operator_harness import apply, audit_records, finished, get, jobs, runs_of, validation, wait_for

from lightbox.devtools import node_chart
from lightbox.devtools.node_config import NODE_NAME


def _all_finished(api_client, ns, names):
    return lambda: [get(api_client, "validations", ns, n) for n in names]


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def gpu_intervals(pods: list[dict]) -> dict[str, tuple[datetime, datetime, datetime]]:
    """{pod: (created, scheduled, finished)}: a pod holds its GPU from placement until its last container ends."""
    out = {}
    for pod in pods:
        scheduled = next(c["lastTransitionTime"] for c in pod["status"]["conditions"]
                         if c["type"] == "PodScheduled" and c["status"] == "True")
        ends = [s["state"]["terminated"]["finishedAt"]
                for s in [*pod["status"].get("initContainerStatuses", []), *pod["status"].get("containerStatuses", [])]
                if "terminated" in s["state"]]
        out[pod["metadata"]["name"]] = (_when(pod["metadata"]["creationTimestamp"]), _when(scheduled), max(map(_when, ends)))
    return out


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """Largest number of [start, end) intervals holding at one instant (an end frees before a start at the same second)."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    held = peak = 0
    for _, step in events:
        held += step
        peak = max(peak, held)
    return peak


def test_most_at_once_counts_overlaps():
    t = [datetime(2026, 1, 1, 0, 0, s, tzinfo=timezone.utc) for s in range(6)]
    assert most_at_once([(t[0], t[3]), (t[1], t[4]), (t[3], t[5])]) == 2   # the third starts as the first ends
    assert most_at_once([(t[0], t[3]), (t[1], t[4]), (t[2], t[5])]) == 3


def test_two_gpus_run_two_gpu_validations_and_the_third_waits(cluster, run_ns, chest, algo, kubectl, api_client):
    """The contract, read from the pods' own timestamps (not from an Event, which the API server may
    deduplicate or the scheduler not emit): the three runs never held more than the node's two GPUs
    at once, one run's pod existed while the other two held them and was placed only after one ended,
    and all three succeeded."""
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
        assert [len(runs_of(v)) for v in done] == [1, 1, 1]
        pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", "lightbox.dev/component=run", "-o", "json",
                                  check=True).stdout)["items"]
        assert len(pods) == 3 and all(p["spec"]["nodeName"] == NODE_NAME for p in pods)
        assert all(any((c.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu") == "1"
                       for c in p["spec"]["initContainers"]) for p in pods)
        held = gpu_intervals(pods)
        assert most_at_once([(scheduled, ended) for _, scheduled, ended in held.values()]) == 2, held
        # Created before a GPU came free, placed only once one did: the scheduler held it back.
        waited = [name for name, (created, scheduled, _) in held.items()
                  if created < min(end for other, (_, _, end) in held.items() if other != name) <= scheduled]
        assert len(waited) == 1, held
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
