"""``lightbox demo`` on a real node: the operator in-cluster from the chart, the vendor in its own container.

Used by devtools/demo.py where the machine allows it (root, Linux; packages are installed):

1. build the Lightbox and reference classifier images (daemonless, cached);
2. start (or reuse) the control plane and the node (devtools/node.py);
3. import the images, ``helm install`` charts/lightbox with the built digest;
4. the node advertises 2 GPUs and the label the example policy selects (no device plugin: the
   scheduler's accounting is real, the devices are not);
5. the sample dataset as two hostPath PersistentVolumes bound to the example claims;
6. examples/ applied with two substitutions: the policy also allows the local registry, the
   Algorithm names the built image by digest;
7. wait for the verdict, print it, leave everything running.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lightbox.devtools import node_chart
from lightbox.devtools import node_config as cfg
from lightbox.devtools.node import Node
from lightbox.operator.crdgen import REPO_ROOT

NAMESPACE = "radiology"
GPU_LABEL = "nvidia.com/gpu.present"
LOCAL_REGISTRY = "localhost"

Say = Callable[[str], None]


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    result = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], input=input, capture_output=True,
                            text=True, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def start_node(workdir: Path, say: Say) -> Node:
    existing = Node.attach(workdir, log=say)
    if existing is not None and existing.running():
        say(f"reusing the node and control plane at {existing.control_plane.url}")
        return existing
    if existing is not None:
        existing.stop()
    return Node(workdir, detach=True, log=say).start()


def advertise_gpus(kubeconfig: Path, count: int = 2) -> None:
    kubectl(kubeconfig, "label", "node", cfg.NODE_NAME, f"{GPU_LABEL}=true", "--overwrite")
    patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(count)},
             {"op": "add", "path": "/status/allocatable/nvidia.com~1gpu", "value": str(count)}]
    kubectl(kubeconfig, "patch", "node", cfg.NODE_NAME, "--subresource=status", "--type=json", "-p", json.dumps(patch))


def claim_volumes(claims: dict[str, Path], namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """A hostPath PV per claim, pre-bound to it (the examples' PVCs name no storage class)."""
    return [{
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"demo-{claim}"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"namespace": namespace, "name": claim},
                 "hostPath": {"path": str(path), "type": "Directory"}},
    } for claim, path in claims.items()]


def localize(doc: dict[str, Any], classifier_image: str) -> dict[str, Any]:
    """An examples/ manifest for the real node: the local registry allowed, the built image named."""
    if doc.get("kind") == "SandboxPolicy":
        registries = doc["spec"].setdefault("allowedRegistries", [])
        if LOCAL_REGISTRY not in registries:
            registries.append(LOCAL_REGISTRY)
    if doc.get("kind") == "Algorithm":
        doc["spec"]["image"] = classifier_image
    if doc.get("kind") == "PersistentVolumeClaim":
        doc["spec"]["storageClassName"] = ""
    return doc


def examples_for_node(classifier_image: str) -> str:
    docs = []
    for manifest in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        docs += [localize(d, classifier_image) for d in yaml.safe_load_all(manifest.read_text()) if d]
    return yaml.safe_dump_all(docs, sort_keys=False)


def run(workdir: Path, claims: dict[str, Path], say: Say) -> tuple[Path, Node]:
    """Everything up to the examples applied; returns the kubeconfig and the node."""
    from lightbox.devtools import images as lbimages

    t0 = time.monotonic()
    say("building the Lightbox and reference classifier images (cached after the first time)")
    built = lbimages.build(["lightbox", "classifier"], log=say)
    say(f"images ready in {time.monotonic() - t0:.0f}s")
    node = start_node(workdir / "node", say)
    kubeconfig = node.kubeconfig
    node_chart.import_images(node.paths.containerd_socket, built, say)
    # The chart renders the operator's Roles in the namespaces it watches: they must exist first.
    kubectl(kubeconfig, "apply", "-f", str(REPO_ROOT / "examples" / "05-namespace.yaml"))
    say("helm install of charts/lightbox (the operator runs in-cluster from the built image)")
    node_chart.helm_install(kubeconfig, node_chart.chart_values(built["lightbox"], watch_namespaces=[NAMESPACE]), workdir=node.workdir, log=say)
    advertise_gpus(kubeconfig)
    for claim, path in claims.items():
        path.chmod(0o755)
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all(claim_volumes(claims)))
    classifier = built["classifier"]
    pinned = f"{classifier.ref.rpartition(':')[0]}@{classifier.digest}"
    # A re-run starts afresh. The Algorithm too: its image digest follows the checkout (the reference
    # images carry the lightbox wheel), and changing spec.image of an existing Algorithm is an
    # approval-relevant change the admission policy refuses without spec.submittedBy.
    for name in ("40-validation.yaml", "30-algorithm.yaml", "20-dataset.yaml"):
        kubectl(kubeconfig, "delete", "-f", str(REPO_ROOT / "examples" / name), "--ignore-not-found", "--timeout=120s")
    say("applying examples/ (policy also allowing localhost, the algorithm's image the built one)")
    kubectl(kubeconfig, "apply", "-f", "-", input=examples_for_node(pinned))
    return kubeconfig, node
