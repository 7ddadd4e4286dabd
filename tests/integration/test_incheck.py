"""The in-pod isolation check end to end: the operator's run Job, through the development
runner and the real Job controller. Where the pod's network is cut (the runner's own
isolation: no interface up), the check passes and the vendor runs; where the stage step's
network answers (a namespace this test creates, loopback up, like a node with no policy
engine), the run ends IsolationNotEnforced and the vendor never runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightbox.api.run import ISOLATION_CHECK_ENV
from lightbox.devtools.localrunner import LocalRunner
from lightbox.devtools.localrunner_config import RunnerConfig, development_images
from lightbox.sandbox.isolation import run_isolated

VENDOR = "registry.lightbox.test/marker/vendor"


@dataclass
class _Result:
    returncode: int | None
    timed_out: bool
    seconds: float
    stdout: bytes
    stderr: bytes
    output_truncated: bool = False
    memory_exceeded: bool = False


def stage_on_an_open_network(argv: list[str], **kwargs: Any) -> Any:
    """The runner's isolation for every container but the stage step, which runs in a network
    namespace we make with loopback up: the API server's and the node's addresses (both
    127.0.0.1 here) answer, as they would on a node whose policy engine is off."""
    env = kwargs["env"]
    if ISOLATION_CHECK_ENV not in env:
        return run_isolated(argv, **kwargs)
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    assert unshare and ip, "needs unshare and ip"
    started = time.monotonic()
    done = subprocess.run(
        [unshare, "--net", "--", "sh", "-c", f'set -e; {ip} link set lo up; exec "$@"', "sh", *argv],
        env=env, cwd=kwargs.get("cwd"), capture_output=True, timeout=kwargs["timeout"],
    )
    return _Result(done.returncode, False, time.monotonic() - started, done.stdout, done.stderr)


def _objects(api_client, namespace: str, tmp_path: Path) -> tuple[Any, ...]:
    from lightbox.api import Algorithm, Dataset, Validation
    from lightbox.sandbox.sampledata import make_sample_dataset

    sample = make_sample_dataset(tmp_path / "claim" / "ds1", n_cases=6)
    meta = {"namespace": namespace, "uid": "00000000-0000-0000-0000-00000000000b", "generation": 1}
    dataset = Dataset.model_validate(
        {
            "apiVersion": "lightbox.dev/v1alpha1",
            "kind": "Dataset",
            "metadata": {**meta, "name": "ds1"},
            "spec": {
                "studies": {"claimName": "datasets", "subPath": "ds1/studies"},
                "groundTruth": {"claimName": "datasets", "subPath": "ds1/truth"},
                "deidentification": {"options": sample.deid_options},
            },
        }
    )
    algorithm = Algorithm.model_validate(
        {
            "apiVersion": "lightbox.dev/v1alpha1",
            "kind": "Algorithm",
            "metadata": {**meta, "name": "marker"},
            "spec": {
                "vendor": "Lightbox",
                "product": "Marker",
                "version": "1.0.0",
                "image": f"{VENDOR}@sha256:" + "b" * 64,
                "task": "classification",
                "modality": "CT",
                "bodyPart": "CHEST",
                "labels": sample.labels,
                "positiveLabel": sample.positive_label,
                "timeoutSeconds": 300,
            },
        }
    )
    validation = Validation.model_validate(
        {
            "apiVersion": "lightbox.dev/v1alpha1",
            "kind": "Validation",
            "metadata": {**meta, "name": "v1"},
            "spec": {
                "algorithmRef": {"name": "marker"},
                "datasetRef": {"name": "ds1"},
                "bootstrap": {"resamples": 200},
            },
        }
    )
    return validation, algorithm, dataset


def run_through_runner(api_client, namespace: str, tmp_path: Path, isolate: Callable[..., Any]) -> tuple[Any, Path]:
    """The operator's Job for a vendor that only leaves a marker file; returns its outcome and the marker's path."""
    from kubernetes import client

    from lightbox.operator import outcome
    from lightbox.operator.builders import run_job
    from lightbox.operator.config import OperatorConfig

    marker = tmp_path / "vendor-ran"
    validation, algorithm, dataset = _objects(api_client, namespace, tmp_path)
    # Loopback addresses only: in the runner's namespace nothing leaves, in ours nothing routes out.
    config = OperatorConfig(probe_dns="127.0.0.1:53", probe_outside="127.0.0.1:9", isolation_check_bound_seconds=3)
    job = run_job(validation, algorithm, dataset, None, "v1-run-1", 1, config, api_server=api_client.configuration.host)
    job["metadata"].pop("ownerReferences")  # the Validation is not stored in this test
    images = development_images(config.trusted_image) | {
        VENDOR: [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"]
    }
    runner_config = RunnerConfig(
        claims={"datasets": tmp_path / "claim"}, images=images, work_dir=tmp_path / "work", watch_seconds=2
    )
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    with LocalRunner(api_client, runner_config, isolate=isolate):
        batch.create_namespaced_job(namespace, job)
        deadline = time.monotonic() + 180
        while True:
            done = batch.read_namespaced_job_status("v1-run-1", namespace)
            if any(c.type in ("Complete", "Failed") and c.status == "True" for c in done.status.conditions or []):
                break
            assert time.monotonic() < deadline, f"the Job did not finish: {done.status}"
            time.sleep(0.5)
    (pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=v1-run-1").items
    as_dict = api_client.sanitize_for_serialization
    return outcome.run_outcome(as_dict(done), as_dict(pod)), marker


def test_where_nothing_answers_the_check_passes_and_the_vendor_runs(api_client, namespace: str, tmp_path: Path) -> None:
    result, marker = run_through_runner(api_client, namespace, tmp_path, run_isolated)
    assert result is not None
    assert result.reason != "IsolationNotEnforced", result.message
    assert marker.read_text() == "ran"  # the vendor ran: the marker is a working witness
    assert result.reason == "MalformedPredictions"  # it wrote no predictions, so the scorer says so


def test_where_the_api_server_answers_the_run_is_refused_and_the_vendor_never_runs(
    api_client, namespace: str, tmp_path: Path
) -> None:
    from urllib.parse import urlsplit

    result, marker = run_through_runner(api_client, namespace, tmp_path, stage_on_an_open_network)
    assert result is not None
    assert (result.phase, result.reason, result.exit_code) == ("Failed", "IsolationNotEnforced", 8), result.message
    api_port = urlsplit(api_client.configuration.host).port
    assert (
        f"api-server 127.0.0.1:{api_port}" in result.message
        or f"api-server https://127.0.0.1:{api_port}" in result.message
    )
    assert "node 127.0.0.1:10250" in result.message
    assert result.report is None
    assert not marker.exists()
