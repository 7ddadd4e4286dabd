"""Status rendering of the development runner (what a kubelet would write)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lightbox.devtools.localrunner_config import RunnerConfig
from lightbox.devtools.localrunner_status import (
    KILLED_EXIT_CODE,
    PodProgress,
    Running,
    Terminated,
    Waiting,
    derived_phase,
    node_lease,
    node_manifest,
    node_status,
    progress_for,
    render_pod_status,
    stamp_conditions,
    terminated_state,
    unschedulable_status,
)

T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=5)


def progress() -> PodProgress:
    pod = {
        "metadata": {"uid": "uid-1"},
        "spec": {
            "initContainers": [
                {"name": "stage", "image": "trusted:1"},
                {"name": "vendor", "image": "v@sha256:" + "a" * 64},
            ],
            "containers": [{"name": "score", "image": "trusted:1"}],
        },
    }
    return progress_for(pod, T0)


def conditions(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_fresh_pod_is_pending_with_every_container_waiting() -> None:
    status = render_pod_status(progress(), host_ip="127.0.0.1", previous_conditions=[], now=T0)
    assert status["phase"] == "Pending"
    assert status["startTime"] == "2026-11-27T07:00:00Z"
    assert status["hostIP"] == status["podIP"] == "127.0.0.1"
    assert [s["state"] for s in status["initContainerStatuses"]] == [{"waiting": {"reason": "PodInitializing"}}] * 2
    assert conditions(status)["Initialized"] == "False"
    assert status["initContainerStatuses"][1]["imageID"].startswith("v@sha256:")
    assert all(s["restartCount"] == 0 for s in status["containerStatuses"])


def test_running_init_keeps_pending_then_main_running_is_running() -> None:
    p = progress()
    p.states["stage"] = Running(T0)
    assert derived_phase(p) == "Pending"
    p.states["stage"] = Terminated(0, "Completed", T0, T1)
    p.states["vendor"] = Terminated(0, "Completed", T0, T1)
    p.states["score"] = Running(T1)
    assert derived_phase(p) == "Running"
    p.phase = derived_phase(p)
    status = render_pod_status(p, host_ip="127.0.0.1", previous_conditions=[], now=T1)
    assert conditions(status) == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert status["containerStatuses"][0]["state"] == {"running": {"startedAt": "2026-11-27T07:00:05Z"}}
    assert status["containerStatuses"][0]["ready"] is True


def test_success_carries_the_termination_message() -> None:
    p = progress()
    for name in ("stage", "vendor"):
        p.states[name] = Terminated(0, "Completed", T0, T1)
    p.states["score"] = Terminated(0, "Completed", T0, T1, '{"metrics": {}}')
    p.phase = derived_phase(p)
    assert p.phase == "Succeeded"
    status = render_pod_status(p, host_ip="127.0.0.1", previous_conditions=[], now=T1)
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated == {
        "exitCode": 0,
        "reason": "Completed",
        "message": '{"metrics": {}}',
        "startedAt": "2026-11-27T07:00:00Z",
        "finishedAt": "2026-11-27T07:00:05Z",
        "containerID": "localrunner://uid-1/score",
    }
    assert conditions(status)["Ready"] == "False"


def test_failed_init_fails_the_pod_and_main_stays_waiting() -> None:
    p = progress()
    p.states["stage"] = Terminated(3, "Error", T0, T1, "PHI found")
    assert derived_phase(p) == "Failed"
    p.phase = "Failed"
    status = render_pod_status(p, host_ip="127.0.0.1", previous_conditions=[], now=T1)
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_failed_main_container_fails_the_pod() -> None:
    p = progress()
    for name in ("stage", "vendor"):
        p.states[name] = Terminated(0, "Completed", T0, T1)
    p.states["score"] = Terminated(5, "Error", T0, T1)
    assert derived_phase(p) == "Failed"


def test_image_pull_failure_shows_in_the_waiting_state_and_pod_reason() -> None:
    p = progress()
    p.states["stage"] = Terminated(0, "Completed", T0, T1)
    p.states["vendor"] = Waiting("ImagePullBackOff", "Back-off pulling image")
    p.phase, p.reason, p.message = "Failed", "ErrImagePull", "Failed to pull image"
    status = render_pod_status(p, host_ip="127.0.0.1", previous_conditions=[], now=T1)
    assert status["initContainerStatuses"][1]["state"] == {
        "waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
    }
    assert (status["phase"], status["reason"]) == ("Failed", "ErrImagePull")


def test_a_memory_kill_reads_as_oomkilled_whatever_else_happened() -> None:
    state = terminated_state(
        returncode=None,
        timed_out=False,
        deadline_exceeded=False,
        message="",
        started_at=T0,
        finished_at=T1,
        oom_killed=True,
    )
    assert (state.exit_code, state.reason) == (KILLED_EXIT_CODE, "OOMKilled")


@pytest.mark.parametrize(
    ("returncode", "timed_out", "deadline", "exit_code", "reason"),
    [
        (0, False, False, 0, "Completed"),
        (2, False, False, 2, "Error"),
        (-9, False, False, 137, "Error"),
        (-15, False, False, 143, "Error"),
        (-9, True, True, KILLED_EXIT_CODE, "DeadlineExceeded"),
        (-9, True, False, KILLED_EXIT_CODE, "Error"),
    ],
)
def test_terminated_state_from_a_process_result(
    returncode: int, timed_out: bool, deadline: bool, exit_code: int, reason: str
) -> None:
    state = terminated_state(
        returncode=returncode,
        timed_out=timed_out,
        deadline_exceeded=deadline,
        message="",
        started_at=T0,
        finished_at=T1,
    )
    assert (state.exit_code, state.reason) == (exit_code, reason)


def test_condition_transition_times_survive_unchanged_status() -> None:
    first = stamp_conditions([{"type": "Ready", "status": "False"}], [], T0)
    again = stamp_conditions([{"type": "Ready", "status": "False"}], first, T1)
    flipped = stamp_conditions([{"type": "Ready", "status": "True"}], again, T1)
    assert again[0]["lastTransitionTime"] == "2026-11-27T07:00:00Z"
    assert flipped[0]["lastTransitionTime"] == "2026-11-27T07:00:05Z"


def test_unschedulable_status_is_what_the_scheduler_writes() -> None:
    status = unschedulable_status("0/1 nodes", [], T0)
    assert status["conditions"][0] | {"lastTransitionTime": None} == {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes",
        "lastTransitionTime": None,
    }


def test_node_has_labels_gpus_and_a_fresh_ready_heartbeat() -> None:
    config = RunnerConfig(node_labels={"nvidia.com/gpu.present": "true", "pool": "dev"})
    manifest = node_manifest(config)
    assert manifest["metadata"]["name"] == "lightbox-local"
    assert manifest["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert manifest["metadata"]["labels"]["kubernetes.io/hostname"] == "lightbox-local"
    status = node_status(config, ready_since=T0, now=T1)
    assert status["allocatable"]["nvidia.com/gpu"] == "8"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["lastHeartbeatTime"], ready["lastTransitionTime"]) == (
        "True",
        "2026-11-27T07:00:05Z",
        "2026-11-27T07:00:00Z",
    )
    lease = node_lease("lightbox-local", "uid", T1)
    assert lease["spec"]["renewTime"] == "2026-11-27T07:00:05.000000Z"


def test_a_result_without_return_code_reads_as_killed() -> None:
    state = terminated_state(
        returncode=None, timed_out=False, deadline_exceeded=False, message="", started_at=T0, finished_at=T1
    )
    assert (state.exit_code, state.reason) == (KILLED_EXIT_CODE, "Error")
