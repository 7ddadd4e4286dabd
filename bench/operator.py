"""How much the operator adds on top of the API server: N Validations → N Jobs + N NetworkPolicies.

    python bench/operator.py [-n 200] [--kubeconfig FILE] [--json]

Without --kubeconfig a throw-away control plane (etcd + kube-apiserver +
kube-controller-manager) is started and stopped. Two timings on the same API
server:

* direct:   this script creates the N Jobs and N NetworkPolicies the operator
            would render (same builders, same concurrency as the operator's
            workers), into a fresh namespace;
* operator: this script creates N Validations (algorithm, verified dataset and
            policy already in place) into another fresh namespace, with the
            operator (a subprocess) watching it, until every run's Job and
            NetworkPolicy exist.

The ratio operator/direct is the figure of merit; the operator's peak RSS
(VmHWM) is reported too. No dev runner runs: pods are created by the Job
controller but nothing executes them, as only the control path is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DIGEST = "sha256:" + "1" * 64


def _manifests(namespace: str, policy_name: str) -> dict[str, dict[str, Any]]:
    return {
        "policy": {
            "apiVersion": "lightbox.dev/v1alpha1", "kind": "SandboxPolicy", "metadata": {"name": policy_name},
            "spec": {"allowedRegistries": ["registry.lightbox.test"], "namespaces": [namespace],
                     "maxConcurrentRuns": 1000, "maxGpusInUse": 1024, "isolationProbe": {"required": False}},
        },
        "dataset": {
            "apiVersion": "lightbox.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "chest", "namespace": namespace},
            "spec": {"studies": {"claimName": "data", "subPath": "chest/studies"},
                     "groundTruth": {"claimName": "data", "subPath": "chest/truth"}},
        },
        "algorithm": {
            "apiVersion": "lightbox.dev/v1alpha1", "kind": "Algorithm", "metadata": {"name": "classifier", "namespace": namespace},
            "spec": {"vendor": "Bench", "product": "classifier", "version": "1", "image": f"registry.lightbox.test/reference/classifier@{DIGEST}",
                     "task": "classification", "modality": "CT", "bodyPart": "CHEST", "labels": ["normal", "abnormal"],
                     "positiveLabel": "abnormal", "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"}, "timeoutSeconds": 600},
        },
    }


def _validation(namespace: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1", "kind": "Validation",
        "metadata": {"name": f"bench-{index:04d}", "namespace": namespace},
        "spec": {"algorithmRef": {"name": "classifier"}, "datasetRef": {"name": "chest"}, "metrics": ["auc"],
                 "acceptance": [{"metric": "auc", "threshold": 0.5}]},
    }


async def _gather_limited(coros: list[Any], limit: int) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def _namespace(kube: Any, name: str) -> None:
    from lightbox.operator.kube import path

    await kube.create(path("namespaces"), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def _setup(kube: Any, namespace: str, policy_name: str) -> dict[str, dict[str, Any]]:
    from lightbox.operator.kube import path

    docs = _manifests(namespace, policy_name)
    await _namespace(kube, namespace)
    docs["policy"], _ = await kube.create(path("sandboxpolicies"), docs["policy"])
    docs["dataset"], _ = await kube.create(path("datasets", namespace), docs["dataset"])
    docs["algorithm"], _ = await kube.create(path("algorithms", namespace), docs["algorithm"])
    status = {"phase": "Verified", "verified": True, "contentHash": "0" * 64, "caseCount": 1, "observedGeneration": 1}
    docs["dataset"] = await kube.patch(path("datasets", namespace, "chest", "status"), {"status": status})
    return docs


async def _count(kube: Any, namespace: str) -> tuple[int, int]:
    from lightbox.operator.kube import path

    jobs = await kube.list(path("jobs", namespace), "lightbox.dev/component=run")
    netpols = await kube.list(path("networkpolicies", namespace), "lightbox.dev/component=run")
    return len(jobs), len(netpols)


async def _wait_all(kube: Any, namespace: str, n: int, timeout: float, started: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs, netpols = await _count(kube, namespace)
        if jobs >= n and netpols >= n:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise TimeoutError(f"only {await _count(kube, namespace)} of {n} Jobs/NetworkPolicies after {timeout}s")


async def direct(kube: Any, n: int, workers: int) -> float:
    """The same objects the operator renders, created straight against the API server."""
    from lightbox.api import Algorithm, Dataset, SandboxPolicy, Validation
    from lightbox.operator import builders
    from lightbox.operator.config import OperatorConfig
    from lightbox.operator.kube import path

    namespace = f"bench-direct-{uuid.uuid4().hex[:6]}"
    policy_name = namespace
    docs = await _setup(kube, namespace, policy_name)
    algorithm, dataset = Algorithm.model_validate(docs["algorithm"]), Dataset.model_validate(docs["dataset"])
    policy = SandboxPolicy.model_validate(docs["policy"])
    config = OperatorConfig()
    try:
        started = time.monotonic()

        async def one(index: int) -> None:
            made, _ = await kube.create(path("validations", namespace), _validation(namespace, index))
            validation = Validation.model_validate(made)
            run = f"{validation.metadata['name']}-r1"
            await kube.create(path("networkpolicies", namespace), builders.run_network_policy(validation, run))
            await kube.create(path("jobs", namespace), builders.run_job(validation, algorithm, dataset, policy, run, 1, config))

        await _gather_limited([one(i) for i in range(n)], workers)
        return await _wait_all(kube, namespace, n, 600, started)
    finally:
        await kube.delete(path("sandboxpolicies", None, policy_name))
        await kube.delete(path("namespaces", None, namespace))


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def with_operator(kube: Any, kubeconfig: Path, n: int, workers: int, log: Path) -> tuple[float, int]:
    from lightbox.operator.kube import path

    namespace = f"bench-operator-{uuid.uuid4().hex[:6]}"
    policy_name = namespace
    await _setup(kube, namespace, policy_name)
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "lightbox.operator", "--namespace", namespace, "--metrics-port", "-1",
             "--kubeconfig", str(kubeconfig), "--workers", str(workers)],
            stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
        )
    try:
        await asyncio.sleep(3)  # the operator's start-up is not what is measured
        if process.poll() is not None:
            raise RuntimeError(f"operator exited early; see {log}")
        started = time.monotonic()
        await _gather_limited(
            [kube.create(path("validations", namespace), _validation(namespace, i)) for i in range(n)], workers
        )
        seconds = await _wait_all(kube, namespace, n, 900, started)
        return seconds, _peak_rss_kib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        await kube.delete(path("sandboxpolicies", None, policy_name))
        await kube.delete(path("namespaces", None, namespace))


async def bench(kubeconfig: Path, n: int, workers: int, log: Path) -> dict[str, Any]:
    from lightbox.operator.kube import Kube

    kube = await Kube.connect(str(kubeconfig))
    try:
        direct_s = await direct(kube, n, workers)
        operator_s, rss_kib = await with_operator(kube, kubeconfig, n, workers, log)
    finally:
        await kube.close()
    return {
        "validations": n,
        "direct_seconds": round(direct_s, 2),
        "operator_seconds": round(operator_s, 2),
        "ratio": round(operator_s / direct_s, 2) if direct_s else None,
        "operator_peak_rss_mib": round(rss_kib / 1024, 1),
        "operator_log": str(log),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="Validations to create (default 200)")
    parser.add_argument("--workers", type=int, default=8, help="operator workers = direct-creation concurrency")
    parser.add_argument("--kubeconfig", type=Path, help="use this cluster (CRDs applied) instead of a throw-away control plane")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    log = Path(tempfile.mkdtemp(prefix="lightbox-bench-")) / "operator.log"

    control_plane = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        from kubernetes import config as kconfig

        from lightbox.devtools.controlplane import ControlPlane

        control_plane = ControlPlane(log.parent / "control-plane", log=lambda m: print(f"[bench] {m}", file=sys.stderr))
        control_plane.start()
        kubeconfig = control_plane.kubeconfig
        api = kconfig.new_client_from_config(str(kubeconfig))
        try:
            _apply_crds(api)
        finally:
            api.close()
    try:
        result = asyncio.run(bench(kubeconfig, args.n, args.workers, log))
    finally:
        if control_plane is not None:
            control_plane.stop()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"validations            {result['validations']}")
        print(f"direct (Job + NetPol)  {result['direct_seconds']:.2f} s")
        print(f"through the operator   {result['operator_seconds']:.2f} s")
        print(f"ratio                  {result['ratio']:.2f}")
        print(f"operator peak RSS      {result['operator_peak_rss_mib']:.1f} MiB")
    return 0


def _apply_crds(api: Any, timeout: float = 60) -> None:
    import yaml
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(api)
    for file in sorted((REPO / "crds").glob("*.yaml")):
        body = yaml.safe_load(file.read_text())
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            crd = ext.read_custom_resource_definition(body["metadata"]["name"])
            if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
                break
            time.sleep(0.2)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
