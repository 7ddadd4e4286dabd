"""The kernel enforces a vendor's limits on the real node: memory by the cgroup, time by the deadline."""

from __future__ import annotations

import json

from operator_harness import apply, finished, get, runs_of, validation, wait_for

from lightbox.api.run import VENDOR_CONTAINER


def _vendor_status(kubectl, ns: str, job: str) -> dict:
    pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", f"job-name={job}", "-o", "json", check=True).stdout)
    (pod,) = pods["items"]
    return {s["name"]: s for s in pod["status"].get("initContainerStatuses") or []}[VENDOR_CONTAINER]


def test_memory_hog_is_oomkilled_by_the_cgroup_and_a_hung_vendor_by_the_deadline(cluster, run_ns, chest, algo, kubectl,
                                                                                   api_client, variant):
    ns = run_ns
    hog, hang = variant("misbehave", "hog", ["hog"]), variant("misbehave", "hang", ["hang"])
    apply(kubectl, ns, chest,
          algo("hogs", hog, gpus=0, memory="256Mi", timeout=300), validation("hogs", "hogs"),
          algo("hangs", hang, gpus=0, timeout=60), validation("hangs", "hangs"))

    hogs = wait_for(lambda: get(api_client, "validations", ns, "hogs"), finished, 600, "the hog's run")
    (run,) = runs_of(hogs)
    assert (run["phase"], run["reason"]) == ("Failed", "OOMKilled"), run
    # The kubelet's reason comes from the container runtime: the kernel's OOM killer in the
    # container's memory cgroup, not a sampler of ours.
    vendor = _vendor_status(kubectl, ns, "hogs-r1")
    assert vendor["state"]["terminated"]["reason"] == "OOMKilled", vendor
    assert vendor["state"]["terminated"]["exitCode"] == 137

    hangs = wait_for(lambda: get(api_client, "validations", ns, "hangs"), finished, 600, "the hung run")
    (run,) = runs_of(hangs)
    assert (run["phase"], run["reason"]) == ("Failed", "DeadlineExceeded"), run
