"""``lightbox demo``: one validation end to end on a local control plane.

1. start (or reuse) etcd + kube-apiserver + kube-controller-manager on loopback;
2. apply the CRDs and examples/ with kubectl: a namespace enforcing PodSecurity
   "restricted", a SandboxPolicy, claims, a Dataset, the reference classifier
   and a Validation;
3. make a de-identified sample dataset from pydicom's bundled files with
   synthetic labels, in the folders the development runner maps the claims to;
4. run the operator and the development runner (DEVELOPMENT ONLY: it plays the
   kubelet) until the Validation has a verdict;
5. print the results and leave the control plane running for kubectl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kubernetes import config as kube_config

from lightbox.api import Validation
from lightbox.devtools.controlplane import ControlPlane
from lightbox.devtools.localrunner import LocalRunner
from lightbox.devtools.localrunner_config import RunnerConfig
from lightbox.devtools.stack import OperatorProcess
from lightbox.operator.crdgen import REPO_ROOT
from lightbox.report import report
from lightbox.sandbox.sampledata import make_sample_dataset

NAMESPACE = "radiology"
VALIDATION = "reference-on-chest-sample"
CLAIMS = {"imaging-studies": "studies", "imaging-truth": "truth"}
SUB_PATH = "chest"


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _kubectl(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def start_control_plane(workdir: Path) -> ControlPlane:
    existing = ControlPlane.attach(workdir)
    if existing is not None and existing.ready():
        _say(f"reusing the control plane at {existing.url}")
        return existing
    if existing is not None:
        existing.stop()
    plane = ControlPlane(workdir, detach=True, log=_say)
    plane.start()
    return plane


def make_claims(root: Path, cases: int, seed: int) -> dict[str, Path]:
    """The sample dataset, laid out as two claims: studies and (apart) ground truth."""
    scratch = root / "sample"
    shutil.rmtree(root, ignore_errors=True)
    sample = make_sample_dataset(scratch, n_cases=cases, seed=seed)
    claims = {}
    for claim, part in CLAIMS.items():
        target = root / claim / SUB_PATH
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(sample.studies_dir if part == "studies" else sample.truth_dir), target)
        claims[claim] = root / claim
    shutil.rmtree(scratch, ignore_errors=True)
    return claims


def _succeeded(validation: Validation) -> bool:
    """Whether the last run succeeded (wait_for_verdict returns once it has finished)."""
    runs = validation.status.runs if validation.status else None
    return runs is not None and len(runs) > 0 and runs[-1].phase == "Succeeded"


def wait_for_verdict(kubeconfig: Path, operator: OperatorProcess | None, timeout: float) -> Validation:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if operator is not None:  # None: the operator runs in-cluster (real node)
            operator.check()
        raw = json.loads(_kubectl(kubeconfig, "get", "validation", VALIDATION, "-n", NAMESPACE, "-o", "json"))
        validation = Validation.model_validate(raw)
        status = validation.status
        phase = status.phase if status else None
        reason = next((c.reason for c in (status.conditions or []) if c.status == "False"), "") if status else ""
        if (phase, reason) != last:
            _say(f"validation phase: {phase or 'Pending'} {reason}".rstrip())
            last = (phase, reason)
        if status and status.runs and status.runs[-1].phase in ("Succeeded", "Failed"):
            return validation
        time.sleep(1)
    tail = operator.tail() if operator is not None else _kubectl(
        kubeconfig, "logs", "-n", "lightbox-system", "deploy/lightbox-operator", "--tail=60")
    raise RuntimeError(f"no verdict within {timeout:.0f}s; operator log:\n{tail}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightbox demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(".lightbox"), help="state folder (default .lightbox)")
    parser.add_argument("--cases", type=int, default=120, help="cases in the sample dataset")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the verdict")
    parser.add_argument("--node", choices=("no", "auto", "yes"), default="no",
                        help="run on a real node (containerd, kubelet; the operator in-cluster from the chart): "
                             "auto where the machine allows it (root, Linux), yes or fail, no: the development runner")
    args = parser.parse_args(argv)
    workdir = args.dir.resolve()
    if args.node != "no":
        from lightbox.devtools.node import unavailable_reason

        reason = unavailable_reason()
        if reason is None:
            return main_real_node(args, workdir)
        if args.node == "yes":
            _say(f"cannot run on a real node: {reason}")
            return 1
        _say(f"no real node here ({reason}); using the development runner")

    plane = start_control_plane(workdir / "control-plane")
    kubeconfig = plane.kubeconfig
    _say("applying the CRDs")
    _kubectl(kubeconfig, "apply", "-f", str(REPO_ROOT / "crds"))
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/part-of=lightbox")

    _say(f"making a de-identified sample dataset of {args.cases} cases from pydicom's bundled files")
    claims = make_claims(workdir / "claims", args.cases, args.seed)

    runner_config = RunnerConfig(claims=claims, work_dir=workdir / "runner", concurrency=2)
    api_client = kube_config.new_client_from_config(str(kubeconfig))
    operator = OperatorProcess(kubeconfig, workdir / "logs" / "operator.log", namespaces=(NAMESPACE,))
    runner = LocalRunner(api_client, runner_config)
    runner.start()
    operator.start()
    try:
        # A re-run starts afresh: the operator (running now, so its finalizers
        # complete) removes the last run's objects before the new data is declared.
        for manifest in ("40-validation.yaml", "20-dataset.yaml"):
            _kubectl(
                kubeconfig,
                "delete",
                "-f",
                str(REPO_ROOT / "examples" / manifest),
                "--ignore-not-found",
                "--timeout=120s",
            )
        _say("applying examples/ with kubectl: namespace, policy, claims, dataset, algorithm, validation")
        for path in sorted((REPO_ROOT / "examples").glob("*.yaml")):
            _kubectl(kubeconfig, "apply", "-f", str(path))
        validation = wait_for_verdict(kubeconfig, operator, args.timeout)
    finally:
        operator.stop()
        runner.stop()

    print()
    print(_kubectl(kubeconfig, "get", "sandboxpolicies,datasets,algorithms,validations", "-n", NAMESPACE))
    print(report(api_client, NAMESPACE, VALIDATION))
    print()
    print("The control plane is still running. To look around:")
    print(f"  export KUBECONFIG={kubeconfig}")
    print(f"  kubectl get lightbox -n {NAMESPACE}")
    print(f"  kubectl get validation {VALIDATION} -n {NAMESPACE} -o yaml")
    print(f"  kubectl get auditrecords -n lightbox-audit -l lightbox.dev/validation-namespace={NAMESPACE}")
    print(f"  lightbox report {VALIDATION} -n {NAMESPACE}")
    print("To stop it:")
    print(f"  make down    # or: lightbox control-plane down --dir {workdir / 'control-plane'}")
    return 0 if _succeeded(validation) else 1


def main_real_node(args: argparse.Namespace, workdir: Path) -> int:
    """The demo with a real node: see devtools/node_demo.py."""
    from lightbox.devtools import node_demo

    started = time.monotonic()
    _say(f"making a de-identified sample dataset of {args.cases} cases from pydicom's bundled files")
    claims = make_claims(workdir / "claims", args.cases, args.seed)
    kubeconfig, node = node_demo.run(workdir, claims, _say)
    validation = wait_for_verdict(kubeconfig, None, args.timeout)
    api_client = kube_config.new_client_from_config(str(kubeconfig))
    print()
    print(_kubectl(kubeconfig, "get", "pods", "-n", "lightbox-system", "-o", "wide"))
    print(_kubectl(kubeconfig, "get", "sandboxpolicies,datasets,algorithms,validations", "-n", NAMESPACE))
    print(report(api_client, NAMESPACE, VALIDATION))
    print()
    print(f"Demo on the real node took {time.monotonic() - started:.0f}s. The node, the control plane and the "
          "operator (in-cluster) keep running; apply your own manifests:")
    print(f"  export KUBECONFIG={kubeconfig}")
    print("  kubectl get pods -A")
    print(f"  kubectl get validation {VALIDATION} -n {NAMESPACE} -o yaml")
    print(f"  lightbox report {VALIDATION} -n {NAMESPACE}")
    print("To stop everything and restore the host:")
    print(f"  make node-down    # or: lightbox node down --dir {node.workdir}")
    return 0 if _succeeded(validation) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
