"""The development runner against the real API server and Job controller.

Containers run through the real ``lightbox.sandbox.isolation.run_isolated``
(no network, read-only binds, hidden paths), as they do in the demo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from lightbox.devtools.localrunner import LocalRunner
from lightbox.devtools.localrunner_config import RunnerConfig
from lightbox.sandbox.isolation import run_isolated

TOOLS = "registry.lightbox.test/tools/python"
IMAGE = f"{TOOLS}@sha256:{'0' * 64}"


@pytest.fixture
def runner(api_client, tmp_path: Path) -> Iterator[LocalRunner]:
    claim = tmp_path / "claim"
    (claim / "truth").mkdir(parents=True)
    (claim / "truth" / "labels.json").write_text('{"c1": 1}')
    config = RunnerConfig(
        claims={"datasets": claim},
        images={TOOLS: [sys.executable]},
        work_dir=tmp_path / "work",
        watch_seconds=2,
        concurrency=2,
    )
    local = LocalRunner(api_client, config, isolate=run_isolated)
    local.start()
    yield local
    local.stop()


def container(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "command": ["python", "-c", code],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **extra,
    }


def pod_spec(containers: list[dict], init: list[dict] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "initContainers": init or [],
        "containers": containers,
        **extra,
    }


def create_pod(api_client, namespace: str, name: str, spec: dict[str, Any]) -> None:
    from kubernetes import client

    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"lightbox.dev/component": "run"}},
        "spec": spec,
    }
    client.CoreV1Api(api_client).create_namespaced_pod(namespace, body)


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s; last seen: {value}")
        time.sleep(0.2)


def finished_pod(api_client, namespace: str, name: str, timeout: float = 60) -> Any:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    return wait_for(
        lambda: core.read_namespaced_pod(name, namespace), lambda p: p.status.phase in ("Succeeded", "Failed"), timeout
    )


WRITE_MESSAGE = "import os; open(os.environ['LIGHTBOX_TERMINATION_LOG'], 'w').write({!r})"
WORK = {"name": "work", "emptyDir": {}}


def test_pod_runs_through_the_runner_and_reports_its_message(api_client, namespace: str, runner: LocalRunner) -> None:
    stage = container(
        "stage",
        "import os; open(os.environ['LIGHTBOX_WORK_DIR'] + '/x', 'w').write('staged')",
        env=[{"name": "LIGHTBOX_WORK_DIR", "value": "/work"}],
        volumeMounts=[{"name": "work", "mountPath": "/work"}],
    )
    score = container(
        "score",
        "import os; staged = open(os.environ['LIGHTBOX_WORK_DIR'] + '/x').read(); "
        "open(os.environ['LIGHTBOX_TERMINATION_LOG'], 'w').write('{\"staged\": \"' + staged + '\"}')",
        env=[{"name": "LIGHTBOX_WORK_DIR", "value": "/work"}],
        volumeMounts=[{"name": "work", "mountPath": "/work", "readOnly": True}],
    )
    create_pod(api_client, namespace, "ok", pod_spec([score], [stage], volumes=[WORK]))

    pod = finished_pod(api_client, namespace, "ok")

    assert pod.status.phase == "Succeeded", pod.status
    assert pod.spec.node_name == runner.config.node_name
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (0, "Completed", '{"staged": "staged"}')
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0
    assert pod.status.start_time is not None and pod.status.host_ip == "127.0.0.1"


def test_job_completes(api_client, namespace: str, runner: LocalRunner) -> None:
    from kubernetes import client

    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "run-1"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"lightbox.dev/component": "run"}},
                "spec": pod_spec([container("score", WRITE_MESSAGE.format('{"auc": 0.9}'))], activeDeadlineSeconds=120),
            },
        },
    }
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(namespace, job)

    def complete(j: Any) -> bool:
        return any(c.type in ("Complete", "Failed") and c.status == "True" for c in (j.status.conditions or []))

    done = wait_for(lambda: batch.read_namespaced_job_status("run-1", namespace), complete, timeout=90)
    assert {c.type for c in done.status.conditions if c.status == "True"} >= {"Complete"}, done.status
    (pod,) = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector="job-name=run-1").items
    assert pod.status.container_statuses[0].state.terminated.message == '{"auc": 0.9}'


def test_failing_command_fails_the_pod_with_its_exit_code(api_client, namespace: str, runner: LocalRunner) -> None:
    create_pod(
        api_client,
        namespace,
        "bad",
        pod_spec([container("score", "import sys; print('malformed predictions'); sys.exit(5)")]),
    )

    pod = finished_pod(api_client, namespace, "bad")

    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (5, "Error")
    assert "malformed predictions" in terminated.message


def test_unknown_image_reports_an_image_pull_failure(api_client, namespace: str, runner: LocalRunner) -> None:
    from kubernetes import client

    vendor = container("vendor", "print('never')", image="evil.example/model@sha256:" + "1" * 64)
    create_pod(api_client, namespace, "pull", pod_spec([container("score", "pass")], [vendor]))

    pod = finished_pod(api_client, namespace, "pull")

    assert (pod.status.phase, pod.status.reason) == ("Failed", "ErrImagePull")
    assert pod.status.init_container_statuses[0].state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")
    events = (
        client.CoreV1Api(api_client).list_namespaced_event(namespace, field_selector="involvedObject.name=pull").items
    )
    assert any(e.reason == "Failed" and "evil.example/model" in e.message for e in events), events


NETWORK_PROBE = """
import json, os, socket
targets = [
    (os.environ['API_HOST'], int(os.environ['API_PORT'])),
    ('127.0.0.2', 53),
    ('127.0.0.1', int(os.environ['API_PORT'])),
]
reached = []
for host, port in targets:
    try:
        socket.create_connection((host, port), timeout=2).close()
        reached.append(f'{host}:{port}')
    except OSError:
        pass
open(os.environ['LIGHTBOX_TERMINATION_LOG'], 'w').write(json.dumps({'reached': reached}))
"""


def test_network_is_unreachable_inside(api_client, namespace: str, runner: LocalRunner) -> None:
    server = urlparse(api_client.configuration.host)
    env = [{"name": "API_HOST", "value": server.hostname}, {"name": "API_PORT", "value": str(server.port or 443)}]
    create_pod(api_client, namespace, "net", pod_spec([container("probe", NETWORK_PROBE, env=env)]))

    pod = finished_pod(api_client, namespace, "net")

    assert pod.status.phase == "Succeeded", pod.status
    assert pod.status.container_statuses[0].state.terminated.message == '{"reached": []}'


def test_active_deadline_is_enforced(api_client, namespace: str, runner: LocalRunner) -> None:
    create_pod(
        api_client,
        namespace,
        "slow",
        pod_spec([container("vendor", "import time; time.sleep(120)")], activeDeadlineSeconds=10),
    )

    pod = finished_pod(api_client, namespace, "slow", timeout=60)

    assert (pod.status.phase, pod.status.reason) == ("Failed", "DeadlineExceeded")
    assert pod.status.container_statuses[0].state.terminated.reason == "DeadlineExceeded"


def test_deleting_a_running_pod_kills_it_and_finalizes_the_delete(
    api_client, namespace: str, runner: LocalRunner, tmp_path: Path
) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    create_pod(api_client, namespace, "doomed", pod_spec([container("vendor", "import time; time.sleep(300)")]))
    wait_for(lambda: core.read_namespaced_pod("doomed", namespace), lambda p: p.status.phase == "Running")

    core.delete_namespaced_pod("doomed", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("doomed", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, bool, timeout=30)
    uid_marker_alive = subprocess.run(["pgrep", "-f", "time.sleep(300)"], capture_output=True, text=True)
    assert uid_marker_alive.stdout.strip() == ""


def test_node_is_registered_ready_with_gpus(api_client, runner: LocalRunner) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    node = wait_for(lambda: _read_node(core, runner.config.node_name), lambda n: n is not None, timeout=30)
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
    assert node.metadata.labels["nvidia.com/gpu.present"] == "true"


def _read_node(core: Any, name: str) -> Any:
    from kubernetes.client.rest import ApiException

    try:
        return core.read_node(name)
    except ApiException:
        return None


def test_the_operators_isolation_probe_finds_nothing_answering(api_client, namespace: str, tmp_path: Path) -> None:
    """The operator's own probe pod, built by its builder, runs through the runner."""
    from kubernetes import client

    from lightbox.api import SandboxPolicy
    from lightbox.cli import COMMANDS
    from lightbox.devtools.localrunner_config import development_images
    from lightbox.operator.builders import probe_pod
    from lightbox.operator.config import OperatorConfig

    if "probe" not in COMMANDS:
        pytest.xfail("lightbox/cli.py has no `probe` command yet (sandbox/probe.py exists)")
    policy = SandboxPolicy.model_validate(
        {
            "apiVersion": "lightbox.dev/v1alpha1",
            "kind": "SandboxPolicy",
            "metadata": {"name": "default", "namespace": namespace, "uid": "00000000-0000-0000-0000-000000000001"},
            "spec": {
                "allowedRegistries": ["registry.lightbox.test"],
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
            },
        }
    )
    config = OperatorConfig()
    pod = probe_pod(policy, namespace, "probe-1", config, api_client.configuration.host)
    pod["metadata"].pop("ownerReferences")  # the policy object is not stored in this test
    runner_config = RunnerConfig(
        images=development_images(config.trusted_image), work_dir=tmp_path / "work", watch_seconds=2
    )
    with LocalRunner(api_client, runner_config, isolate=run_isolated):
        client.CoreV1Api(api_client).create_namespaced_pod(namespace, pod)
        finished = finished_pod(api_client, namespace, "probe-1", timeout=90)

    terminated = finished.status.container_statuses[0].state.terminated
    assert finished.status.phase == "Succeeded", terminated
    assert json.loads(terminated.message)["isolated"] is True


FILESYSTEM_PROBE = """
import json, os
seen = {}
try:
    seen['truth'] = sorted(os.listdir(os.environ['CLAIM_HOST_PATH']))
except OSError as error:
    seen['truth'] = type(error).__name__
try:
    open(os.environ['LIGHTBOX_INPUT_DIR'] + '/x', 'w').write('tamper')
    seen['input'] = 'written'
except OSError as error:
    seen['input'] = type(error).__name__
open(os.environ['LIGHTBOX_OUTPUT_DIR'] + '/p.json', 'w').write('{}')
open(os.environ['LIGHTBOX_TERMINATION_LOG'], 'w').write(json.dumps(seen))
"""


def test_vendor_cannot_see_unmounted_claims_or_write_read_only_mounts(
    api_client, namespace: str, runner: LocalRunner
) -> None:
    claim_host = runner.config.claims["datasets"]
    vendor = container(
        "vendor",
        FILESYSTEM_PROBE,
        env=[
            {"name": "CLAIM_HOST_PATH", "value": str(claim_host / "truth")},
            {"name": "LIGHTBOX_INPUT_DIR", "value": "/input"},
            {"name": "LIGHTBOX_OUTPUT_DIR", "value": "/output"},
        ],
        volumeMounts=[
            {"name": "input", "mountPath": "/input", "readOnly": True},
            {"name": "output", "mountPath": "/output"},
        ],
    )
    score = container(
        "score",
        "import os; open(os.environ['LIGHTBOX_TERMINATION_LOG'], 'w').write(str(sorted(os.listdir(os.environ['T']))))",
        env=[{"name": "T", "value": "/data/truth"}],
        volumeMounts=[{"name": "truth", "mountPath": "/data/truth", "subPath": "truth", "readOnly": True}],
    )
    volumes = [
        {"name": "truth", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
        {"name": "input", "emptyDir": {}},
        {"name": "output", "emptyDir": {}},
    ]
    create_pod(api_client, namespace, "fs", pod_spec([score], [vendor], volumes=volumes))

    pod = finished_pod(api_client, namespace, "fs")

    assert pod.status.phase == "Succeeded", pod.status
    seen = json.loads(pod.status.init_container_statuses[0].state.terminated.message)
    assert seen["truth"] in ([], "FileNotFoundError", "PermissionError")
    assert seen["input"] in ("OSError", "PermissionError")
    assert pod.status.container_statuses[0].state.terminated.message == "['labels.json']"


def test_the_operators_run_job_scores_the_reference_algorithm(api_client, namespace: str, tmp_path: Path) -> None:
    """stage -> vendor -> score exactly as the operator builds them; the real scorer's report lands in status."""
    from kubernetes import client

    from lightbox.api import Algorithm, Dataset, Validation
    from lightbox.api.results import ScoreReport
    from lightbox.devtools.localrunner_config import development_images
    from lightbox.operator.builders import run_job
    from lightbox.operator.config import OperatorConfig
    from lightbox.sandbox.sampledata import make_sample_dataset

    sample = make_sample_dataset(tmp_path / "claim" / "ds1", n_cases=12)
    meta = {"namespace": namespace, "uid": "00000000-0000-0000-0000-00000000000a", "generation": 1}
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
            "metadata": {**meta, "name": "classifier"},
            "spec": {
                "vendor": "Lightbox",
                "product": "Reference classifier",
                "version": "1.0.0",
                "image": "registry.lightbox.test/reference/classifier@sha256:" + "a" * 64,
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
                "algorithmRef": {"name": "classifier"},
                "datasetRef": {"name": "ds1"},
                "bootstrap": {"resamples": 200},
            },
        }
    )
    config = OperatorConfig()
    job = run_job(validation, algorithm, dataset, None, "v1-run-1", 1, config)
    job["metadata"].pop("ownerReferences")  # the Validation is not stored in this test
    runner_config = RunnerConfig(
        claims={"datasets": tmp_path / "claim"},
        images=development_images(config.trusted_image),
        work_dir=tmp_path / "work",
        watch_seconds=2,
    )
    batch = client.BatchV1Api(api_client)
    with LocalRunner(api_client, runner_config, isolate=run_isolated):
        batch.create_namespaced_job(namespace, job)
        done = wait_for(
            lambda: batch.read_namespaced_job_status("v1-run-1", namespace),
            lambda j: any(c.type in ("Complete", "Failed") and c.status == "True" for c in (j.status.conditions or [])),
            timeout=240,
        )
    (pod,) = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector="job-name=v1-run-1").items
    assert {c.type for c in done.status.conditions if c.status == "True"} >= {"Complete"}, pod.status
    assert [s.state.terminated.exit_code for s in pod.status.init_container_statuses] == [0, 0]
    report = ScoreReport.model_validate_json(pod.status.container_statuses[0].state.terminated.message)
    assert report.cases == 12


def test_the_cli_runs_as_a_separate_process(api_client, kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    config = tmp_path / "runner.yaml"
    config.write_text(
        json.dumps({"images": {TOOLS: [sys.executable]}, "work_dir": str(tmp_path / "work"), "watch_seconds": 1})
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "lightbox", "local-runner", "--config", str(config), "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        create_pod(api_client, namespace, "cli", pod_spec([container("score", WRITE_MESSAGE.format("from the cli"))]))
        pod = finished_pod(api_client, namespace, "cli")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert pod.status.container_statuses[0].state.terminated.message == "from the cli", output
    assert process.returncode == 0, output
    assert "DEVELOPMENT" in output
