"""On the real node: the operator in-cluster from the chart, a vendor in its own container, real limits."""

from __future__ import annotations

import json

from operator_harness import CASES, apply, finished, get, runs_of, validation, wait_for

from lightbox.api.run import SCORE_CONTAINER, STAGE_CONTAINER, VENDOR_CONTAINER
from lightbox.devtools import node_chart
from lightbox.devtools.node_config import NODE_NAME

RUN_TIMEOUT = 600


def _pods(kubectl, ns: str, selector: str) -> list[dict]:
    out = kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json", check=True)
    return json.loads(out.stdout)["items"]


def _statuses(pod: dict) -> dict[str, dict]:
    status = pod["status"]
    return {s["name"]: s for s in [*(status.get("initContainerStatuses") or []),
                                    *(status.get("containerStatuses") or [])]}


def test_operator_runs_in_cluster_from_the_built_image(cluster, kubectl):
    pod = node_chart.operator_pod(cluster.kubeconfig)
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] == NODE_NAME
    (status,) = pod["status"]["containerStatuses"]
    digest = cluster.images["lightbox"].digest
    assert status["ready"] is True and status["restartCount"] == 0, status
    assert status["imageID"].endswith(digest), (status["imageID"], digest)
    table = kubectl("get", "pods", "-n", node_chart.NAMESPACE, check=True).stdout
    assert "Running" in table


def test_vendor_runs_from_its_own_image_and_the_validation_succeeds(cluster, run_ns, chest, algo, kubectl, api_client):
    ns = run_ns
    apply(kubectl, ns, chest, algo("classifier", cluster.image("classifier"), gpus=0),
          validation("chest-auc", "classifier"))
    final = wait_for(lambda: get(api_client, "validations", ns, "chest-auc"), finished, timeout=RUN_TIMEOUT,
                     what="the run on the real node")
    run = runs_of(final)[-1]
    assert run["phase"] == "Succeeded", run
    auc = run["metrics"]["auc"]
    assert 0.0 <= auc["lower"] <= auc["value"] <= auc["upper"] <= 1.0
    assert run["cases"] == CASES and run["scored"] == CASES   # the sample dataset made for the tier

    (pod,) = _pods(kubectl, ns, "job-name=chest-auc-r1")
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["phase"] == "Succeeded"
    statuses = _statuses(pod)
    vendor = statuses[VENDOR_CONTAINER]
    assert vendor["imageID"].endswith(cluster.images["classifier"].digest)
    assert vendor["state"]["terminated"]["exitCode"] == 0
    trusted = cluster.images["lightbox"].digest
    assert statuses[STAGE_CONTAINER]["imageID"].endswith(trusted)
    assert statuses[SCORE_CONTAINER]["imageID"].endswith(trusted)
    # Studies and truth share one claim: one volume, mounted by subPath into stage (studies) and
    # score (truth) only; the kubelet mounted it (the pod ran).
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert list(claims.values()) == [chest["spec"]["studies"]["claimName"]], claims
    containers = {c["name"]: c for c in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]}
    claim_mounts = {name: sorted((m["mountPath"], m.get("subPath")) for m in c.get("volumeMounts", [])
                                 if m["name"] in claims)
                    for name, c in containers.items()}
    assert claim_mounts == {STAGE_CONTAINER: [("/data/studies", "chest/studies")], VENDOR_CONTAINER: [],
                            SCORE_CONTAINER: [("/data/truth", "chest/truth")]}, claim_mounts

    # The API server reaches the kubelet (serving TLS on the node address) for logs.
    logs = kubectl("logs", "-n", ns, pod["metadata"]["name"], "-c", STAGE_CONTAINER)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.strip(), "the stage step logged nothing"
