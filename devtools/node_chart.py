"""The operator in-cluster on the real node: images imported, then ``helm install`` of charts/lightbox.

The images come from ``lightbox.devtools.images.build`` (daemonless, cached OCI
archives); they are imported into the node's containerd under their tag and
their digest, so the chart's ``repository@digest`` reference resolves without a
registry (``imagePullPolicy: IfNotPresent`` never pulls what is present).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightbox.devtools import binaries as _binaries
from lightbox.devtools import node_pause

Log = Callable[[str], None]
REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "charts" / "lightbox"
NAMESPACE = "lightbox-system"
RELEASE = "lightbox"


class ChartError(RuntimeError):
    pass


def import_images(socket: Path, built: Mapping[str, Any], log: Log) -> None:
    """Import each BuiltImage's archive (tag and digest names) into the node's containerd."""
    for img in built.values():
        node_pause.import_archive(socket, Path(img.archive), img.ref, digest=img.digest, log=log)
        pinned = f"{img.ref.rpartition(':')[0]}@{img.digest}"
        if not node_pause.image_present(socket, pinned):
            raise ChartError(f"containerd has {img.ref} but not {pinned}: the archive's manifest digest differs "
                             f"from the build's ({img.digest})")


def chart_values(lightbox_image: Any, *, watch_namespaces: Sequence[str] = (), run_namespaces: Sequence[str] = (),
                 runs_cluster_wide: bool = False,
                 allowed_registries: Sequence[str] = (), create_policy: bool = False,
                 verbose: bool = True, operator_cpu_request: str | None = None) -> dict[str, Any]:
    """Values for the node: the built image by digest; where runs may happen (the chart insists).

    ``operator_cpu_request``: on a 2-core node every run pod asks for a whole core (the trusted
    steps' request), so the operator's own 100m decides whether two runs fit at once.
    """
    repo = lightbox_image.ref.rpartition(":")[0]
    extra: dict[str, Any] = {}
    if operator_cpu_request is not None:
        extra["resources"] = {"requests": {"cpu": operator_cpu_request}}
    return {
        **extra,
        "image": {"repository": repo, "digest": lightbox_image.digest, "pullPolicy": "IfNotPresent"},
        "verbose": verbose,
        "watchNamespaces": list(watch_namespaces),
        "runNamespaces": list(run_namespaces),
        "rbac": {"runObjectsClusterWide": runs_cluster_wide},
        "sandboxPolicy": {"create": create_policy,
                          "spec": {"allowedRegistries": list(allowed_registries), "namespaces": list(run_namespaces)}},
    }


def helm_install(kubeconfig: Path, values: Mapping[str, Any], *, namespace: str = NAMESPACE, release: str = RELEASE,
                 workdir: Path, timeout: float = 300, log: Log) -> None:
    helm = _binaries.ensure_helm(log=log)
    values_file = workdir / "chart-values.json"
    values_file.write_text(json.dumps(values, indent=2) + "\n")
    cmd = [str(helm), "upgrade", "--install", release, str(CHART), "--namespace", namespace, "--create-namespace",
           "--kubeconfig", str(kubeconfig), "-f", str(values_file), "--wait", "--timeout", f"{int(timeout)}s"]
    t0 = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
    if result.returncode != 0:
        pods = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace, "describe", "pods"],
                              capture_output=True, text=True, timeout=60).stdout
        raise ChartError(f"helm install of {CHART} failed (exit {result.returncode}): {result.stderr.strip()}\n"
                         f"pods in {namespace}:\n{pods[-4000:]}")
    log(f"helm installed {release} in {namespace} in {time.monotonic() - t0:.0f}s")


def operator_pod(kubeconfig: Path, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The operator's pod (the chart's Deployment has one replica)."""
    out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace, "get", "pods", "-o", "json",
                          "-l", "app.kubernetes.io/name=lightbox"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ChartError(f"kubectl get pods -n {namespace}: {out.stderr.strip()}")
    items = [p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]
    if len(items) != 1:
        raise ChartError(f"expected one operator pod in {namespace}, found {len(items)}")
    return items[0]
