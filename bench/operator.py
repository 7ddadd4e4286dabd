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

    python bench/operator.py --watch-scale 5000 [--kubeconfig FILE] [--json]

measures the operator at rest over many objects instead: N Validations, each with
an Algorithm and a verified Dataset of its own (3N objects, suspended so no run
starts), exist before the operator starts; reported are the time until it has
reconciled every Validation once, its RSS then (VmRSS) and at its peak (VmHWM),
and the time a change takes to reach it: a Validation's spec is patched
(historyLimit, a new generation) and the clock stops when the operator's status
write says it saw that generation (watch delivery + queue + reconcile + write),
sampled on several Validations.

``--profile DIR`` records the operator with py-spy (``pip install py-spy``; it
attaches by pid, no root changes) over the measured phase: the raw collapsed
stacks (``py-spy record --format raw``) and a printed top of the functions by
inclusive samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
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


def _status_kib(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status in KiB: VmHWM (peak resident), VmRSS (resident now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _peak_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


class Profiler:
    """py-spy attached to a running process; ``stop`` leaves the raw collapsed stacks in ``out``."""

    def __init__(self, pid: int, out: Path, name: str, rate: int = 50):
        out.mkdir(parents=True, exist_ok=True)
        self.raw = out / f"{name}.txt"
        spy = shutil.which("py-spy")
        if spy is None:
            raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
        # --nonblocking: sampling does not stop the operator, so it is not slowed by being watched.
        self.process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking", "--format", "raw", "-o", str(self.raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> Path:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self.raw


def top_frames(raw: str, limit: int = 25) -> list[tuple[str, int, float]]:
    """(function, inclusive samples, share) from py-spy's collapsed stacks, each function once per stack."""
    totals: dict[str, int] = {}
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples += int(count)
        seen = set()
        for frame in stack.split(";"):
            name = re.sub(r":\d+\)$", ")", frame)  # one entry per function, not per line
            if name not in seen:
                seen.add(name)
                totals[name] = totals.get(name, 0) + int(count)
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:limit]
    return [(name, n, n / samples if samples else 0.0) for name, n in ranked]


def _start_operator(kubeconfig: Path, namespace: str, workers: int, log: Path, verbose: bool = False) -> subprocess.Popen[bytes]:
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "lightbox.operator", "--namespace", namespace, "--metrics-port", "-1",
             "--kubeconfig", str(kubeconfig), "--workers", str(workers), *(["--verbose"] if verbose else [])],
            stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
        )


def _dump_stacks(pid: int, out: Path) -> None:
    """The operator's Python stacks now (py-spy dump, asyncio tasks are not shown, the running frame is)."""
    spy = shutil.which("py-spy")
    if spy is None:
        return
    done = subprocess.run([spy, "dump", "--pid", str(pid), "--locals"], capture_output=True, text=True, timeout=60)
    out.write_text(f"# {time.strftime('%H:%M:%S')} py-spy dump --pid {pid}\n{done.stdout}{done.stderr}")


def _stop_operator(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


async def with_operator(
    kube: Any, kubeconfig: Path, n: int, workers: int, log: Path, profile: Path | None = None
) -> tuple[float, int]:
    from lightbox.operator.kube import path

    namespace = f"bench-operator-{uuid.uuid4().hex[:6]}"
    policy_name = namespace
    await _setup(kube, namespace, policy_name)
    process = _start_operator(kubeconfig, namespace, workers, log)
    try:
        # The operator's start-up is not what is measured: the clock starts once it has
        # written the Algorithm's status (its first pass), however slow the machine is.
        await _wait_ready(kube, namespace, process, log)
        profiler = Profiler(process.pid, profile, f"operator-n{n}") if profile else None
        started = time.monotonic()
        await _gather_limited(
            [kube.create(path("validations", namespace), _validation(namespace, i)) for i in range(n)], workers
        )
        seconds = await _wait_all(kube, namespace, n, 900, started)
        if profiler is not None:
            profiler.stop()
        return seconds, _peak_rss_kib(process.pid)
    finally:
        _stop_operator(process)
        await kube.delete(path("sandboxpolicies", None, policy_name))
        await kube.delete(path("namespaces", None, namespace))


async def _wait_ready(kube: Any, namespace: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    from lightbox.operator.kube import path

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"operator exited early; see {log}")
        algorithm = await kube.get(path("algorithms", namespace, "classifier"))
        if ((algorithm or {}).get("status") or {}).get("conditions"):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the operator wrote no Algorithm status within {timeout} s; see {log}")


# -- the operator at rest over many objects ------------------------------------------------------


def _scale_objects(namespace: str, index: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The index-th Algorithm, Dataset and (suspended) Validation, each Validation with its own pair."""
    docs = _manifests(namespace, namespace)
    algorithm, dataset = docs["algorithm"], docs["dataset"]
    algorithm["metadata"] = {"name": f"algo-{index:05d}", "namespace": namespace}
    dataset["metadata"] = {"name": f"data-{index:05d}", "namespace": namespace}
    validation = _validation(namespace, index)
    validation["metadata"]["name"] = f"watch-{index:05d}"
    validation["spec"].update(algorithmRef={"name": f"algo-{index:05d}"}, datasetRef={"name": f"data-{index:05d}"}, suspend=True)
    return algorithm, dataset, validation


async def _create_scale(kube: Any, namespace: str, n: int, concurrency: int) -> None:
    from lightbox.operator.kube import path

    verified = {"status": {"phase": "Verified", "verified": True, "contentHash": "0" * 64, "caseCount": 1, "observedGeneration": 1}}

    async def one(index: int) -> None:
        algorithm, dataset, validation = _scale_objects(namespace, index)
        await kube.create(path("algorithms", namespace), algorithm)
        await kube.create(path("datasets", namespace), dataset)
        await kube.patch(path("datasets", namespace, dataset["metadata"]["name"], "status"), verified)
        await kube.create(path("validations", namespace), validation)

    await _gather_limited([one(i) for i in range(n)], concurrency)


async def _reconciled(kube: Any, namespace: str) -> int:
    """Validations whose status says the operator has seen their current generation."""
    from lightbox.operator.kube import path

    items = await kube.list(path("validations", namespace))
    return sum(
        1 for v in items
        if ((v.get("status") or {}).get("observedGeneration") or 0) >= v["metadata"].get("generation", 1)
    )


async def _reaction_seconds(kube: Any, namespace: str, index: int, timeout: float = 600,
                            stalled: tuple[int, Path] | None = None) -> float:
    """A spec change (historyLimit) until the operator's status says it saw that generation.

    ``stalled`` (operator pid, folder): a sample still waiting after 5 s leaves the operator's
    stacks there, with the wall-clock time of the patch in the bench's stderr to match its log."""
    from lightbox.operator.kube import path

    url = path("validations", namespace, f"watch-{index:05d}")
    started = time.monotonic()
    patched = await kube.patch(url, {"spec": {"historyLimit": 11 + index % 80}})
    generation = patched["metadata"]["generation"]
    print(f"[bench] {time.strftime('%H:%M:%S')} patched {url} to generation {generation} "
          f"(resourceVersion {patched['metadata']['resourceVersion']})", file=sys.stderr)
    dumped = False
    while time.monotonic() - started < timeout:
        current = await kube.get(url)
        if ((current or {}).get("status") or {}).get("observedGeneration") == generation:
            return time.monotonic() - started
        if stalled is not None and not dumped and time.monotonic() - started > 5:
            dumped = True
            out = stalled[1] / f"stall-{index:05d}.txt"
            _dump_stacks(stalled[0], out)
            print(f"[bench] {time.strftime('%H:%M:%S')} {url} still at generation "
                  f"{((current or {}).get('status') or {}).get('observedGeneration')} after 5 s: stacks in {out}",
                  file=sys.stderr)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{url}: generation {generation} not observed within {timeout} s")


async def watch_scale(kube: Any, kubeconfig: Path, n: int, workers: int, log: Path, samples: int = 10,
                      profile: Path | None = None, verbose: bool = False) -> dict[str, Any]:
    from lightbox.operator.kube import path

    namespace = f"bench-watch-{uuid.uuid4().hex[:6]}"
    await _setup(kube, namespace, namespace)
    try:
        began = time.monotonic()
        await _create_scale(kube, namespace, n, 32)
        created_s = time.monotonic() - began
        print(f"[bench] {3 * n} objects created in {created_s:.1f} s", file=sys.stderr)
        process = _start_operator(kubeconfig, namespace, workers, log, verbose)
        try:
            profiler = Profiler(process.pid, profile, f"operator-watch{n}") if profile else None
            started = time.monotonic()
            while (done := await _reconciled(kube, namespace)) < n:
                if process.poll() is not None:
                    raise RuntimeError(f"operator exited early; see {log}")
                if time.monotonic() - started > 3600:
                    raise TimeoutError(f"only {done} of {n} Validations reconciled after an hour")
                await asyncio.sleep(2)
            synced_s = time.monotonic() - started
            if profiler is not None:
                profiler.stop()
            rss_synced = _status_kib(process.pid, "VmRSS")
            print(f"[bench] {n} Validations reconciled {synced_s:.1f} s after the operator started; "
                  f"RSS {rss_synced / 1024:.1f} MiB", file=sys.stderr)
            # Spread over the namespace: early, middle and late names alike.
            stalled = (process.pid, log.parent)
            reactions = [await _reaction_seconds(kube, namespace, (i * 7919) % n, stalled=stalled) for i in range(samples)]
            print(f"[bench] reactions (s): {' '.join(f'{r:.2f}' for r in reactions)}", file=sys.stderr)
            return {
                "validations": n,
                "objects_watched": 3 * n,
                "create_seconds": round(created_s, 1),
                "sync_seconds": round(synced_s, 1),
                "operator_rss_mib": round(rss_synced / 1024, 1),
                "operator_peak_rss_mib": round(_status_kib(process.pid, "VmHWM") / 1024, 1),
                "reaction_median_seconds": round(statistics.median(reactions), 3),
                "reaction_max_seconds": round(max(reactions), 3),
                "reaction_samples": len(reactions),
                "operator_log": str(log),
            }
        finally:
            _stop_operator(process)
    finally:
        await kube.delete(path("sandboxpolicies", None, namespace))
        await kube.delete(path("namespaces", None, namespace))


async def bench(kubeconfig: Path, n: int, workers: int, log: Path, profile: Path | None = None) -> dict[str, Any]:
    kube = await _connect(kubeconfig)
    try:
        direct_s = await direct(kube, n, workers)
        operator_s, rss_kib = await with_operator(kube, kubeconfig, n, workers, log, profile)
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
    parser.add_argument("--watch-scale", type=int, metavar="N",
                        help="instead: the operator at rest over N Validations (+ N Algorithms, N Datasets): RSS and reaction time")
    parser.add_argument("--samples", type=int, default=10, help="reaction-time samples with --watch-scale (default 10)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="record the operator with py-spy into DIR")
    parser.add_argument("--verbose-operator", action="store_true",
                        help="run the operator with --verbose (every event handled is logged, with its time)")
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
        if args.watch_scale:
            result = asyncio.run(_watch_scale(kubeconfig, args.watch_scale, args.workers, log, args.samples, args.profile,
                                              args.verbose_operator))
        else:
            result = asyncio.run(bench(kubeconfig, args.n, args.workers, log, args.profile))
    finally:
        if control_plane is not None:
            control_plane.stop()
    if args.json:
        print(json.dumps(result))
    elif args.watch_scale:
        print(f"validations watched    {result['validations']} (+ as many Algorithms and Datasets)")
        print(f"first pass over all    {result['sync_seconds']:.1f} s")
        print(f"operator RSS           {result['operator_rss_mib']:.1f} MiB after the first pass, "
              f"{result['operator_peak_rss_mib']:.1f} MiB peak")
        print(f"change to operator     {result['reaction_median_seconds']:.3f} s median, "
              f"{result['reaction_max_seconds']:.3f} s max of {result['reaction_samples']}")
    else:
        print(f"validations            {result['validations']}")
        print(f"direct (Job + NetPol)  {result['direct_seconds']:.2f} s")
        print(f"through the operator   {result['operator_seconds']:.2f} s")
        print(f"ratio                  {result['ratio']:.2f}")
        print(f"operator peak RSS      {result['operator_peak_rss_mib']:.1f} MiB")
    if args.profile:
        for raw in sorted(args.profile.glob("operator-*.txt")):
            print(f"\npy-spy {raw} (inclusive samples, top functions):")
            for name, count, share in top_frames(raw.read_text()):
                print(f"  {share:6.1%} {count:7d}  {name}")
    return 0


async def _connect(kubeconfig: Path) -> Any:
    from lightbox.operator.kube import Kube

    return await Kube.connect(str(kubeconfig))


async def _watch_scale(kubeconfig: Path, n: int, workers: int, log: Path, samples: int, profile: Path | None,
                       verbose: bool) -> dict[str, Any]:
    kube = await _connect(kubeconfig)
    try:
        return await watch_scale(kube, kubeconfig, n, workers, log, samples, profile, verbose)
    finally:
        await kube.close()


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
