"""The development runner's execution loop against a recording fake API.

Isolation is faked here with a plain subprocess of the same signature as
``lightbox.sandbox.isolation.run_isolated``; the integration tests use the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lightbox.devtools.localrunner import LocalRunner, kill_pod_processes
from lightbox.devtools.localrunner_config import RunnerConfig
from lightbox.devtools.localrunner_spec import POD_MARKER_ENV

TRUSTED = "registry.lightbox.test/lightbox"
VENDOR = "registry.lightbox.test/vendor/model"


@dataclass
class FakeResult:
    returncode: int
    timed_out: bool
    seconds: float
    stdout: bytes
    stderr: bytes
    output_truncated: bool = False
    memory_exceeded: bool = False


class FakeIsolation:
    """Records every call; runs the process without any isolation (tests only)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        argv,
        *,
        env,
        read_only,
        hidden,
        timeout,
        max_output_bytes,
        cwd,
        max_file_bytes=None,
        max_memory_bytes=None,
    ) -> FakeResult:  # noqa: ANN001
        self.calls.append(
            {
                "argv": argv, "env": env, "read_only": read_only, "hidden": hidden, "timeout": timeout, "cwd": cwd,
                "max_file_bytes": max_file_bytes, "max_memory_bytes": max_memory_bytes,
            }
        )
        started = time.monotonic()
        try:
            done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as expired:
            return FakeResult(-9, True, time.monotonic() - started, expired.stdout or b"", expired.stderr or b"")
        return FakeResult(done.returncode, False, time.monotonic() - started, done.stdout, done.stderr)


class FakeCore:
    """Just enough of CoreV1Api, recording the status patches in order."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.patches: list[dict[str, Any]] = []
        self.bindings: list[tuple[str, str, dict]] = []
        self.deleted: list[str] = []
        self.events: list[dict[str, Any]] = []

    def create_node(self, body: dict) -> Any:
        return SimpleNamespace(metadata=SimpleNamespace(uid="node-uid"))

    def patch_node_status(self, name: str, body: dict) -> None:
        pass

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> Any:
        return SimpleNamespace(data=json.dumps({"items": self.pods, "metadata": {"resourceVersion": "1"}}).encode())

    def create_namespaced_pod_binding(self, name: str, namespace: str, body: dict, **kwargs: Any) -> None:
        assert kwargs.get("_preload_content") is False
        self.bindings.append((namespace, name, body))

    def patch_namespaced_pod_status(self, name: str, namespace: str, body: dict) -> None:
        self.patches.append(json.loads(json.dumps(body["status"])))

    def create_namespaced_event(self, namespace: str, body: dict) -> None:
        self.events.append(body)

    def delete_namespaced_pod(self, name: str, namespace: str, body: dict) -> None:
        self.deleted.append(name)

    @property
    def final(self) -> dict[str, Any]:
        return self.patches[-1]


class FakeCoordination:
    def patch_namespaced_lease(self, *args: Any) -> None:
        pass


def restricted(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **container,
    }


def python(
    name: str, code: str, *, image: str = TRUSTED, mounts: list[dict] | None = None, env: list[dict] | None = None
) -> dict:
    return restricted(
        {
            "name": name,
            "image": image,
            "command": ["python", "-c", code],
            "volumeMounts": mounts or [],
            "env": env or [],
        }
    )


def make_pod(init: list[dict], main: list[dict], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "run-1",
            "namespace": "team-a",
            "uid": "0123456789-uid",
            "labels": {"lightbox.dev/component": "run"},
        },
        "spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}},
                {"name": "output", "emptyDir": {}},
            ],
            "initContainers": init,
            "containers": main,
            **spec,
        },
        "status": {"phase": "Pending"},
    }


WRITE_MESSAGE = "import os; open(os.environ['LIGHTBOX_TERMINATION_LOG'], 'w').write({!r})"


@pytest.fixture
def claims(tmp_path: Path) -> Path:
    (tmp_path / "datasets" / "d1" / "truth").mkdir(parents=True)
    (tmp_path / "datasets" / "d1" / "truth" / "labels.json").write_text('{"c1": 1}')
    return tmp_path / "datasets"


def runner_for(
    pods: list[dict], claims: Path, tmp_path: Path, isolate: Any, **overrides: Any
) -> tuple[LocalRunner, FakeCore]:
    config = RunnerConfig(
        claims={"datasets": claims},
        images={TRUSTED: [sys.executable], VENDOR: [sys.executable, "-c", "print('vendor default')"]},
        work_dir=tmp_path / "work",
        image_pull_backoff_seconds=0,
        **overrides,
    )
    runner = LocalRunner(None, config, isolate=isolate, host_env={"PATH": os.environ.get("PATH", "/usr/bin")})
    core = FakeCore(pods)
    runner.core, runner.coordination = core, FakeCoordination()  # type: ignore[assignment]
    return runner, core


def test_pod_runs_in_order_and_reports_success_with_the_message(claims: Path, tmp_path: Path) -> None:
    produce = python(
        "vendor",
        "import os; open(os.path.join(os.environ['LIGHTBOX_OUTPUT_DIR'], 'p.json'), 'w').write('42')",
        image=VENDOR,
        mounts=[{"name": "output", "mountPath": "/output"}],
        env=[{"name": "LIGHTBOX_OUTPUT_DIR", "value": "/output"}],
    )
    score = python(
        "score",
        "import os; v = open(os.environ['OUT'] + '/p.json').read(); t = open(os.environ['T'] + '/labels.json').read(); "
        "open(os.environ['LIGHTBOX_TERMINATION_LOG'], 'w').write(v + ' ' + t)",
        mounts=[
            {"name": "output", "mountPath": "/output", "readOnly": True},
            {"name": "data", "mountPath": "/data/truth", "subPath": "d1/truth", "readOnly": True},
        ],
        env=[{"name": "OUT", "value": "/output"}, {"name": "T", "value": "/data/truth"}],
    )
    isolation = FakeIsolation()
    runner, core = runner_for([make_pod([produce], [score])], claims, tmp_path, isolation)

    assert runner.run_once() == 1

    assert core.bindings[0][2]["target"] == {"apiVersion": "v1", "kind": "Node", "name": "lightbox-local"}
    phases = [patch["phase"] for patch in core.patches]
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded"
    assert phases.index("Running") > phases.index("Pending")
    terminated = core.final["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (0, "Completed", '42 {"c1": 1}')
    vendor_call, score_call = isolation.calls
    assert claims in vendor_call["hidden"] and claims / "d1" / "truth" in vendor_call["hidden"]
    assert claims / "d1" / "truth" in score_call["read_only"]
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_failed_init_container_fails_the_pod_with_its_exit_code(claims: Path, tmp_path: Path) -> None:
    stage = python("stage", "import sys; print('PHI found'); sys.exit(3)")
    score = python("score", "print('never')")
    isolation = FakeIsolation()
    runner, core = runner_for([make_pod([stage], [score])], claims, tmp_path, isolation)

    runner.run_once()

    assert core.final["phase"] == "Failed"
    terminated = core.final["initContainerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert terminated["message"] == "PHI found\n"  # FallbackToLogsOnError
    assert core.final["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert len(isolation.calls) == 1


def test_unknown_image_is_an_image_pull_failure(claims: Path, tmp_path: Path) -> None:
    vendor = python("vendor", "print('x')", image="evil.example/model@sha256:" + "a" * 64)
    isolation = FakeIsolation()
    runner, core = runner_for([make_pod([vendor], [python("score", "pass")])], claims, tmp_path, isolation)

    runner.run_once()

    waiting = [patch["initContainerStatuses"][0]["state"].get("waiting", {}).get("reason") for patch in core.patches]
    assert "ErrImagePull" in waiting and waiting[-1] == "ImagePullBackOff"
    assert (core.final["phase"], core.final["reason"]) == ("Failed", "ErrImagePull")
    assert isolation.calls == []
    assert [(e["reason"], e["type"], e["involvedObject"].get("fieldPath")) for e in core.events] == [
        ("Scheduled", "Normal", None),
        ("Failed", "Warning", "spec.initContainers{vendor}"),
    ]


def test_active_deadline_kills_and_fails_with_deadline_exceeded(claims: Path, tmp_path: Path) -> None:
    vendor = python("vendor", "import time; time.sleep(30)", image=VENDOR)
    runner, core = runner_for(
        [make_pod([vendor], [python("score", "pass")], activeDeadlineSeconds=1)], claims, tmp_path, FakeIsolation()
    )

    started = time.monotonic()
    runner.run_once()

    assert time.monotonic() - started < 15
    assert (core.final["phase"], core.final["reason"]) == ("Failed", "DeadlineExceeded")
    terminated = core.final["initContainerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "DeadlineExceeded")
    # Like a kubelet, one write says Failed and why: a reader acting on the
    # first Failed it sees must not take the kill for the vendor's own exit.
    failed = [(p["phase"], p.get("reason")) for p in core.patches if p["phase"] == "Failed"]
    assert failed and set(failed) == {("Failed", "DeadlineExceeded")}, failed


def test_without_isolation_nothing_runs(claims: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    def unavailable(argv: list[str], **kwargs: Any) -> Any:
        raise RuntimeError("no user namespaces")

    stage = python("stage", f"open({str(marker)!r}, 'w')")
    runner, core = runner_for([make_pod([stage], [python("score", "pass")])], claims, tmp_path, unavailable)

    runner.run_once()

    assert not marker.exists()
    terminated = core.final["initContainerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "StartError" and "no user namespaces" in terminated["message"]
    assert core.final["phase"] == "Failed"


def test_unsupported_volume_fails_the_pod_clearly(claims: Path, tmp_path: Path) -> None:
    pod = make_pod([], [python("score", "pass")])
    pod["spec"]["volumes"].append({"name": "cm", "configMap": {"name": "x"}})
    runner, core = runner_for([pod], claims, tmp_path, FakeIsolation())

    runner.run_once()

    assert (core.final["phase"], core.final["reason"]) == ("Failed", "FailedMount")
    assert "configMap" in core.final["message"]


def test_keep_workdirs_keeps_logs(claims: Path, tmp_path: Path) -> None:
    runner, core = runner_for(
        [make_pod([], [python("score", "print('hello')")])], claims, tmp_path, FakeIsolation(), keep_workdirs=True
    )

    runner.run_once()

    (pod_dir,) = (tmp_path / "work").iterdir()
    assert (pod_dir / "logs" / "score.log").read_text() == "hello\n"
    assert core.final["phase"] == "Succeeded"


def test_pod_bound_elsewhere_or_finished_is_left_alone(claims: Path, tmp_path: Path) -> None:
    elsewhere = make_pod([], [python("score", "pass")], nodeName="other")
    finished = make_pod([], [python("score", "pass")])
    finished["metadata"]["uid"] = "finished"
    finished["status"]["phase"] = "Succeeded"
    runner, core = runner_for([elsewhere, finished], claims, tmp_path, FakeIsolation())

    assert runner.run_once() == 0
    assert core.patches == [] and core.bindings == []


def test_deleting_a_running_pod_kills_its_processes(claims: Path, tmp_path: Path) -> None:
    uid = "kill-me-uid"
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, POD_MARKER_ENV: uid}
    )
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, POD_MARKER_ENV: uid + "x"}
    )
    try:
        assert kill_pod_processes(uid) == 1
        assert sleeper.wait(timeout=10) == -9
        assert bystander.poll() is None
    finally:
        sleeper.kill()
        bystander.kill()


class _DeletedJustBeforeSpawn(FakeIsolation):
    """The delete lands after the runner's last look and before the process exists."""

    def __init__(self, runner_ref: list[Any]) -> None:
        super().__init__()
        self.runner_ref = runner_ref

    def __call__(self, argv, **kwargs: Any) -> FakeResult:  # noqa: ANN001
        self.runner_ref[0]._cancel(kwargs["env"][POD_MARKER_ENV], "deleted")
        return super().__call__(argv, **kwargs)


def test_a_container_spawned_after_the_delete_sweep_is_still_killed(claims: Path, tmp_path: Path) -> None:
    pod = make_pod([], [python("vendor", "import time; time.sleep(60)")])
    ref: list[Any] = []
    runner, core = runner_for([pod], claims, tmp_path, _DeletedJustBeforeSpawn(ref))
    ref.append(runner)
    assert runner._claim(pod)

    worker = threading.Thread(target=runner._execute, args=(pod,))
    worker.start()
    worker.join(timeout=20)  # the sleeper asks for 60 s: only a later sweep ends it sooner

    assert not worker.is_alive()
    assert core.deleted == ["run-1"]  # the delete is finalized once the process is gone


class _NoEvents:
    """A watch that never delivers: the runner must find pods by relisting."""

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)
        return iter(())

    def stop(self) -> None:
        pass


def start_watch_loop(runner: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Thread]:
    monkeypatch.setattr("kubernetes.watch.Watch", _NoEvents)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,))
    thread.start()
    return stop, thread


def test_watch_loop_runs_pods_and_stops_cleanly(claims: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner, core = runner_for(
        [make_pod([], [python("score", "pass")])], claims, tmp_path, FakeIsolation(), watch_seconds=1
    )

    stop, thread = start_watch_loop(runner, monkeypatch)
    deadline = time.monotonic() + 20
    while not (core.patches and core.final["phase"] == "Succeeded") and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert core.final["phase"] == "Succeeded"
    assert len(core.bindings) == 1  # relisting the same pending pod does not run it twice


def test_stopping_the_runner_kills_and_fails_running_pods(
    claims: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, core = runner_for(
        [make_pod([], [python("score", "import time; time.sleep(60)")])], claims, tmp_path, FakeIsolation()
    )

    stop, thread = start_watch_loop(runner, monkeypatch)
    deadline = time.monotonic() + 20
    while not (core.patches and core.final["phase"] == "Running") and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    stop.set()
    thread.join(timeout=20)
    assert time.monotonic() - started < 15
    assert (core.final["phase"], core.final["reason"]) == ("Failed", "NodeShutdown")
    assert core.final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137


def test_development_images_cover_the_trusted_image_and_reference_algorithms() -> None:
    from lightbox.devtools.localrunner_config import development_images
    from lightbox.devtools.localrunner_spec import image_entrypoint
    from lightbox.operator.config import DEFAULT_TRUSTED_IMAGE

    images = development_images()
    assert RunnerConfig().all_images() == images
    assert RunnerConfig(development_images=False).all_images() == {}
    assert image_entrypoint(DEFAULT_TRUSTED_IMAGE, images) == [sys.executable, "-m", "lightbox"]
    assert (
        image_entrypoint("registry.lightbox.test/reference/classifier@sha256:" + "a" * 64, images)[-1]
        == "lightbox.sandbox.reference.classifier"
    )


def test_ephemeral_storage_limit_reaches_isolation(claims: Path, tmp_path: Path) -> None:
    score = python("score", "pass") | {"resources": {"limits": {"ephemeral-storage": "1Gi"}}}
    isolation = FakeIsolation()
    runner, core = runner_for([make_pod([], [score])], claims, tmp_path, isolation)

    runner.run_once()

    assert isolation.calls[0]["max_file_bytes"] == 1 << 30
    assert core.final["phase"] == "Succeeded"


class MemoryKill(FakeIsolation):
    """Reports a kill for memory, as run_isolated does, for any container with a memory limit."""

    def __call__(self, argv, **kwargs: Any) -> FakeResult:  # noqa: ANN001
        result = super().__call__(argv, **kwargs)
        if kwargs.get("max_memory_bytes") is not None:
            return FakeResult(None, False, result.seconds, b"", b"", memory_exceeded=True)  # type: ignore[arg-type]
        return result


def test_memory_limit_reaches_isolation_and_a_kill_reads_oomkilled(claims: Path, tmp_path: Path) -> None:
    vendor = python("vendor", "pass", image=VENDOR) | {"resources": {"limits": {"memory": "256Mi"}}}
    isolation = MemoryKill()
    runner, core = runner_for([make_pod([vendor], [python("score", "pass")])], claims, tmp_path, isolation)

    runner.run_once()

    assert [call["max_memory_bytes"] for call in isolation.calls] == [256 << 20]  # the scorer never ran
    terminated = core.final["initContainerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")
    assert core.final["phase"] == "Failed"


def test_a_failed_binding_is_retried_on_the_next_pass(claims: Path, tmp_path: Path) -> None:
    runner, core = runner_for([make_pod([], [python("score", "pass")])], claims, tmp_path, FakeIsolation())
    bind = core.create_namespaced_pod_binding
    attempts: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("connection reset")
        bind(*args, **kwargs)

    core.create_namespaced_pod_binding = flaky  # type: ignore[method-assign]

    assert runner.run_once() == 1 and core.patches == []
    assert runner.run_once() == 1
    assert core.final["phase"] == "Succeeded"
