"""Shared pieces of the operator's integration tests: manifests, the dev runner, the operator process.

The operator runs as a subprocess (``python -m lightbox.operator``) so tests can
SIGKILL it like a crashed pod; the development runner runs in-process.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from lightbox.devtools.localrunner import LocalRunner
from lightbox.devtools.localrunner_config import RunnerConfig
from lightbox.devtools.stack import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
TRUSTED_REPO = "ghcr.io/lightbox-health/lightbox"
TRUSTED_IMAGE = f"{TRUSTED_REPO}@sha256:{'0' * 64}"
VENDOR = "registry.lightbox.test/reference"
DIGEST = "sha256:" + "1" * 64
CLAIM = "lightbox-data"
AUDIT_NAMESPACE = "lightbox-audit"  # the operator's default (OperatorConfig.audit_namespace)
CASES = 60  # seed 7: 23 positives, 37 negatives, above the scorer's minimum of 15 per class for an interval


def image(name: str) -> str:
    return f"{VENDOR}/{name}@{DIGEST}"


INVERTED_CLASSIFIER = (
    "import math\n"
    "from lightbox.sandbox.reference import classifier as c\n"
    "c.probability = lambda f: round(1.0 / (1.0 + math.exp((f - c.CENTRE) / c.WIDTH)), 6)\n"
    "raise SystemExit(c.main([]))\n"
)


def runner_images() -> dict[str, list[str]]:
    py = [sys.executable, "-m"]
    images = {
        TRUSTED_REPO: ["lightbox"],
        f"{VENDOR}/classifier": [*py, "lightbox.sandbox.reference.classifier"],
    }
    # The reference classifier made worse: its logistic turned around, so it ranks cases backwards (drift tests).
    images[f"{VENDOR}/classifier-inverted"] = [sys.executable, "-c", INVERTED_CLASSIFIER]
    for mode in ("hang", "hog", "malformed", "schema", "read-truth", "network"):
        images[f"{VENDOR}/misbehave-{mode}"] = [*py, "lightbox.sandbox.reference.misbehave", mode]
    return images


@contextmanager
def local_runner(
    api_client, claim_root: Path, work: Path, concurrency: int = 2, images: dict[str, list[str]] | None = None
) -> Iterator[LocalRunner]:
    """The development runner with the reference images (runner_images()) and a test's own ``images``."""
    config = RunnerConfig(
        claims={CLAIM: claim_root},
        images={**runner_images(), **(images or {})},
        work_dir=work,
        watch_seconds=2,
        concurrency=concurrency,
        image_pull_backoff_seconds=0.5,
    )
    runner = LocalRunner(api_client, config)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def Operator(kubeconfig: Path, namespace: str, log: Path, **env: str) -> OperatorProcess:  # noqa: N802
    """The operator for one namespace as a child process (the same wrapper the demo uses)."""
    return OperatorProcess(kubeconfig, log, namespaces=(namespace,), trusted_image=TRUSTED_IMAGE, cwd=REPO, **env)


@contextmanager
def operator_with_runner(
    api_client, kubeconfig: Path, namespace: str, claim_root: Path, work: Path,
    images: dict[str, list[str]] | None = None,
) -> Iterator[OperatorProcess]:
    """The operator for ``namespace`` (log in ``work``) and a development runner with ``images`` added."""
    operator = Operator(kubeconfig, namespace, work / "operator.log").start()
    try:
        with local_runner(api_client, claim_root, work / "runner", images=images):
            yield operator
    finally:
        operator.stop()


# -- manifests -------------------------------------------------------------------


def policy(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "SandboxPolicy",
        "metadata": {"name": name},
        "spec": {
            "allowedRegistries": ["registry.lightbox.test"],
            "namespaces": [namespace],
            "maxGpusPerRun": 1,
            "maxConcurrentRuns": 4,
            "isolationProbe": {"required": True, "intervalSeconds": 3600},
            **spec,
        },
    }


def dataset(name: str = "chest", sub: str = "chest") -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "studies": {"claimName": CLAIM, "subPath": f"{sub}/studies"},
            "groundTruth": {"claimName": CLAIM, "subPath": f"{sub}/truth"},
            "deidentification": {
                "profile": "basic",
                "options": ["retainPatientCharacteristics", "retainInstitutionIdentity"],
            },
            "modality": "CT",
        },
    }


def algorithm(name: str, image_ref: str, timeout: int = 300, gpus: int = 1, memory: str = "1Gi") -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "Algorithm",
        "metadata": {"name": name},
        "spec": {
            "vendor": "Lightbox Reference",
            "product": name,
            "version": "1.0.0",
            "image": image_ref,
            "task": "classification",
            "modality": "CT",
            "bodyPart": "CHEST",
            "labels": ["normal", "abnormal"],
            "positiveLabel": "abnormal",
            "resources": {"gpus": gpus, "cpu": "1", "memory": memory, "ephemeralStorage": "1Gi"},
            "timeoutSeconds": timeout,
        },
    }


def formatted_dataset(name: str, data_format: str, modality: str) -> dict[str, Any]:
    """A Dataset of another format than DICOM (photo, slide-tiff): studies and truth under ``name``/ in the claim."""
    doc = dataset(name, name)
    del doc["spec"]["deidentification"]  # left to its default, as a region writing a photo or slide Dataset would
    doc["spec"] |= {"format": data_format, "modality": modality}
    return doc


def classifier(name: str, image_name: str, modality: str, body_part: str, labels: list[str]) -> dict[str, Any]:
    """A classification Algorithm of another modality; its last label is the positive one."""
    algo = algorithm(name, image(image_name))
    algo["spec"] |= {"modality": modality, "bodyPart": body_part, "labels": labels, "positiveLabel": labels[-1]}
    return algo


def validation(name: str, algorithm_name: str, dataset_name: str = "chest", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "Validation",
        "metadata": {"name": name},
        "spec": {
            "algorithmRef": {"name": algorithm_name},
            "datasetRef": {"name": dataset_name},
            "metrics": ["auc", "sensitivity", "specificity"],
            "acceptance": [{"metric": "auc", "threshold": 0.5, "bound": "point"}],
            "bootstrap": {"resamples": 200, "seed": 1, "level": "case"},
            **spec,
        },
    }


def apply(kubectl, namespace: str | None, *docs: dict[str, Any]) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    result = kubectl(*args, input=yaml.safe_dump_all(docs))
    assert result.returncode == 0, result.stderr


def apply_sample(kubectl, namespace: str, policy_name: str, *validations: dict[str, Any], name: str = "classifier",
                 **policy_spec: Any) -> None:
    """The set-up of most operator tests: SandboxPolicy ``policy_name`` for ``namespace``, the sample Dataset,
    Algorithm ``name`` (the reference image of that name) and ``validations``."""
    apply(kubectl, None, policy(policy_name, namespace, **policy_spec))
    apply(kubectl, namespace, dataset(), algorithm(name, image(name)), *validations)


# -- reading ---------------------------------------------------------------------


def custom(api_client):
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


def get(api_client, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return custom(api_client).get_namespaced_custom_object("lightbox.dev", "v1alpha1", namespace, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def wait_for(
    read: Callable[[], Any],
    done: Callable[[Any], bool],
    timeout: float,
    what: str,
    operator: Operator | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        if operator is not None:
            operator.check()
        value = read()
        if done(value):
            return value
        time.sleep(0.5)
    tail = operator.tail() if operator is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value:\n{yaml.safe_dump(value)}\n{tail}")


def succeeded_run(api_client, namespace: str, name: str, operator: OperatorProcess, cases: int,
                  timeout: float = 300) -> dict[str, Any]:
    """The last run of Validation ``name`` once finished, checked to have Succeeded with all ``cases`` scored."""
    final = wait_for(lambda: get(api_client, "validations", namespace, name), finished, timeout=timeout,
                     what=f"{name} to finish", operator=operator)
    run = runs_of(final)[-1]
    assert run["phase"] == "Succeeded", (run, operator.tail())
    assert run["cases"] == cases and run["scored"] == cases
    return run


def assert_auc_above_chance(run: dict[str, Any]) -> None:
    auc = run["metrics"]["auc"]
    assert 0.5 < auc["value"] <= 1 and auc["lower"] <= auc["value"] <= auc["upper"], auc


def audit_records(api_client, namespace: str) -> list[dict[str, Any]]:
    """The run records of the Validations of ``namespace``: kept in the audit namespace, not there."""
    selector = f"lightbox.dev/validation-namespace={namespace}"
    items = custom(api_client).list_namespaced_custom_object(
        "lightbox.dev", "v1alpha1", AUDIT_NAMESPACE, "auditrecords", label_selector=selector
    )["items"]
    # By run number, then run name: record names are chain ids now, which say nothing of order.
    runs = (a for a in items if a["spec"]["event"] == "RunFinished")
    return sorted(runs, key=lambda a: (a["spec"]["run"]["number"], a["spec"]["run"]["name"]))


def runs_of(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return ((obj or {}).get("status") or {}).get("runs") or []


def finished(obj: dict[str, Any] | None) -> bool:
    runs = runs_of(obj)
    return bool(runs) and runs[-1]["phase"] in {"Succeeded", "Failed"}


def jobs(api_client, namespace: str, selector: str = "lightbox.dev/component=run") -> list[dict[str, Any]]:
    from kubernetes import client

    items = client.BatchV1Api(api_client).list_namespaced_job(namespace, label_selector=selector).items
    return [api_client.sanitize_for_serialization(j) for j in items]


def network_policies(api_client, namespace: str) -> list[dict[str, Any]]:
    from kubernetes import client

    items = client.NetworkingV1Api(api_client).list_namespaced_network_policy(namespace).items
    return [api_client.sanitize_for_serialization(n) for n in items]


def delete_policy(api_client, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        custom(api_client).delete_cluster_custom_object("lightbox.dev", "v1alpha1", "sandboxpolicies", name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def make_claim(root: Path) -> Path:
    """The claim's host directory: a sample dataset under chest/ (studies + truth)."""
    from lightbox.sandbox.sampledata import make_sample_dataset

    if not (root / "chest" / "studies").exists():
        make_sample_dataset(root / "chest", n_cases=CASES, seed=7)
    return root


def copy_claim(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def add_phi(claim_root: Path, src: str = "chest", dst: str = "dirty") -> None:
    """A copy of the sample dataset in which one file names its patient."""
    import pydicom

    shutil.copytree(claim_root / src, claim_root / dst)
    first = sorted((claim_root / dst / "studies").rglob("*.dcm"))[0]
    ds = pydicom.dcmread(first)
    ds.PatientName = "DOE^JANE"
    ds.save_as(first)


def mark_verified(api_client, namespace: str, name: str) -> None:
    """Stand in for the verification Job where no runner executes it (tests without a runner)."""
    body = {
        "status": {
            "phase": "Verified",
            "verified": True,
            "contentHash": "0" * 64,
            "caseCount": CASES,
            "observedGeneration": 1,
        }
    }
    custom(api_client).patch_namespaced_custom_object_status(
        "lightbox.dev", "v1alpha1", namespace, "datasets", name, body
    )


def pods_of_job(api_client, namespace: str, job: str) -> list[dict[str, Any]]:
    from kubernetes import client

    items = (
        client.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}")
        .items
    )
    return [api_client.sanitize_for_serialization(p) for p in items]


def finish_pod_as_kubelet(api_client, namespace: str, pod: str, score_exit: int, score_message: str) -> None:
    """Write a finished pod's status the way a kubelet would, with a chosen scorer result."""
    from kubernetes import client

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def status(name: str, code: int, message: str = "") -> dict[str, Any]:
        return {
            "name": name, "image": "x", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                     "message": message, "startedAt": now, "finishedAt": now}},
        }

    body = {
        "status": {
            "phase": "Succeeded" if score_exit == 0 else "Failed",
            "initContainerStatuses": [status("stage", 0), status("vendor", 0)],
            "containerStatuses": [status("score", score_exit, score_message)],
        }
    }
    client.CoreV1Api(api_client).patch_namespaced_pod_status(pod, namespace, body)
