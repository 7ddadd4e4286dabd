"""Pure rendering of what a kubelet reports: pod status and the Node object.

DEVELOPMENT ONLY (the local runner's stand-in for kubelet status reporting).
Every function returns plain API dicts, ready for ``patch_*_status``.
"""

from __future__ import annotations

import platform
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from lightbox.devtools.localrunner_config import RunnerConfig

# Exit code reported for a container killed by SIGKILL (deadline, deletion).
KILLED_EXIT_CODE = 128 + signal.SIGKILL


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- container states -------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    reason: str = "PodInitializing"
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: datetime


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: datetime
    finished_at: datetime
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


ContainerState = Waiting | Running | Terminated


def exit_code_of(returncode: int | None) -> int:
    """subprocess reports a signal as -N (isolation: None for its own kill); a runtime as 128+N."""
    if returncode is None:
        return KILLED_EXIT_CODE
    return 128 - returncode if returncode < 0 else returncode


def terminated_state(
    *,
    returncode: int | None,
    timed_out: bool,
    deadline_exceeded: bool,
    message: str,
    started_at: datetime,
    finished_at: datetime,
    oom_killed: bool = False,
) -> Terminated:
    """A finished process as a container state; timeouts and memory kills read as a kill."""
    if oom_killed:
        return Terminated(KILLED_EXIT_CODE, "OOMKilled", started_at, finished_at, message)
    if timed_out:
        reason = "DeadlineExceeded" if deadline_exceeded else "Error"
        note = (
            "pod's activeDeadlineSeconds exceeded"
            if deadline_exceeded
            else "killed by the local runner's container timeout"
        )
        return Terminated(KILLED_EXIT_CODE, reason, started_at, finished_at, message or note)
    code = exit_code_of(returncode)
    return Terminated(code, "Completed" if code == 0 else "Error", started_at, finished_at, message)


def state_dict(state: ContainerState) -> dict[str, Any]:
    if isinstance(state, Waiting):
        waiting: dict[str, Any] = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": rfc3339(state.started_at)}}
    terminated: dict[str, Any] = {
        "exitCode": state.exit_code,
        "reason": state.reason,
        "startedAt": rfc3339(state.started_at),
        "finishedAt": rfc3339(state.finished_at),
    }
    if state.message:
        terminated["message"] = state.message
    return {"terminated": terminated}


def container_status(name: str, image: str, state: ContainerState, container_id: str) -> dict[str, Any]:
    started = not isinstance(state, Waiting)
    body: dict[str, Any] = {
        "name": name,
        "image": image,
        "imageID": image if "@sha256:" in image else "",
        "ready": isinstance(state, Running),
        "started": isinstance(state, Running),
        "restartCount": 0,
        "state": state_dict(state),
        "lastState": {},
    }
    if started:
        body["containerID"] = container_id
        if isinstance(state, Terminated):
            body["state"]["terminated"]["containerID"] = container_id
    return body


# --- pod status -------------------------------------------------------------------

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]


@dataclass
class PodProgress:
    """The runner's view of one pod while it executes (mutable, owned by one thread)."""

    uid: str
    init: list[tuple[str, str]]  # (container name, image) in order
    main: list[tuple[str, str]]
    start_time: datetime
    states: dict[str, ContainerState] = field(default_factory=dict)
    phase: Phase = "Pending"
    reason: str = ""
    message: str = ""

    def state(self, name: str) -> ContainerState:
        return self.states.get(name, Waiting())

    def container_id(self, name: str) -> str:
        return f"localrunner://{self.uid}/{name}"


def derived_phase(progress: PodProgress) -> Phase:
    """Phase from container states, as the kubelet computes it for restartPolicy Never."""
    init_states = [progress.state(name) for name, _ in progress.init]
    main_states = [progress.state(name) for name, _ in progress.main]
    if any(isinstance(s, Terminated) and not _succeeded(s) for s in init_states):
        return "Failed"
    if not all(isinstance(s, Terminated) for s in init_states):
        return "Pending"
    if main_states and all(isinstance(s, Terminated) for s in main_states):
        return "Succeeded" if all(_succeeded(s) for s in main_states) else "Failed"
    if any(not isinstance(s, Waiting) for s in main_states):
        return "Running"
    return "Pending"


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
    if not ok and reason:
        body["reason"] = reason
    if not ok and message:
        body["message"] = message
    return body


def _succeeded(state: ContainerState) -> bool:
    return isinstance(state, Terminated) and state.succeeded


def pod_conditions(progress: PodProgress) -> list[dict[str, Any]]:
    """Conditions without timestamps (see stamp_conditions)."""
    terminal = progress.phase in ("Succeeded", "Failed")
    pending_init = [name for name, _ in progress.init if not _succeeded(progress.state(name))]
    unready = [name for name, _ in progress.main if not isinstance(progress.state(name), Running)]
    initialized = not pending_init
    ready = not unready and not terminal
    not_ready_reason = "PodCompleted" if terminal and initialized else "ContainersNotReady"
    not_ready_message = "" if terminal and initialized else f"containers with unready status: [{' '.join(unready)}]"
    return [
        _condition("PodReadyToStartContainers", not terminal),
        _condition(
            "Initialized",
            initialized,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]",
        ),
        _condition("Ready", ready, not_ready_reason, not_ready_message),
        _condition("ContainersReady", ready, not_ready_reason, not_ready_message),
        _condition("PodScheduled", True),
    ]


def stamp_conditions(
    conditions: Sequence[dict[str, Any]], previous: Sequence[Mapping[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """Keep lastTransitionTime while a condition's status is unchanged."""
    before = {c.get("type"): c for c in previous}
    stamped = []
    for condition in conditions:
        old = before.get(condition["type"])
        same = old is not None and old.get("status") == condition["status"] and old.get("lastTransitionTime")
        stamped.append({**condition, "lastTransitionTime": old["lastTransitionTime"] if same and old else rfc3339(now)})
    return stamped


def render_pod_status(
    progress: PodProgress, *, host_ip: str, previous_conditions: Sequence[Mapping[str, Any]], now: datetime
) -> dict[str, Any]:
    """The whole status a kubelet would write for this progress."""
    status: dict[str, Any] = {
        "phase": progress.phase,
        "conditions": stamp_conditions(pod_conditions(progress), previous_conditions, now),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": host_ip,
        "podIPs": [{"ip": host_ip}],
        "startTime": rfc3339(progress.start_time),
        "initContainerStatuses": [
            container_status(name, image, progress.state(name), progress.container_id(name))
            for name, image in progress.init
        ],
        "containerStatuses": [
            container_status(name, image, progress.state(name), progress.container_id(name))
            for name, image in progress.main
        ],
    }
    if progress.reason:
        status["reason"] = progress.reason
    if progress.message:
        status["message"] = progress.message
    return status


def progress_for(pod: Mapping[str, Any], start_time: datetime) -> PodProgress:
    spec = pod.get("spec", {})
    pairs = lambda items: [(str(c["name"]), str(c.get("image", ""))) for c in items or []]  # noqa: E731
    return PodProgress(
        uid=str(pod.get("metadata", {}).get("uid", "")),
        init=pairs(spec.get("initContainers")),
        main=pairs(spec.get("containers")),
        start_time=start_time,
    )


def unschedulable_status(message: str, previous: Sequence[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """What kube-scheduler writes for a pod no node fits."""
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    return {"phase": "Pending", "conditions": stamp_conditions([condition], previous, now)}


# --- the Node ---------------------------------------------------------------------


def node_labels(config: RunnerConfig) -> dict[str, str]:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "kubernetes.io/hostname": config.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "lightbox.dev/local-runner": "true",
        **config.node_labels,
    }


def node_manifest(config: RunnerConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.node_name,
            "labels": node_labels(config),
            "annotations": {"lightbox.dev/local-runner": "development stand-in for a kubelet"},
        },
        "spec": {"taints": list(config.node_taints)} if config.node_taints else {},
    }


def node_status(config: RunnerConfig, *, ready_since: datetime, now: datetime) -> dict[str, Any]:
    def condition(kind: str, ok: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": ok,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": rfc3339(now),
            "lastTransitionTime": rfc3339(ready_since),
        }

    uname = platform.uname()
    return {
        "capacity": dict(config.node_capacity),
        "allocatable": dict(config.node_capacity),
        "conditions": [
            condition("Ready", "True", "KubeletReady", "lightbox local runner is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "local runner does not track memory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "local runner does not track disk"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "local runner does not track PIDs"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.host_ip},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": uname.release,
            "osImage": "lightbox local runner (development)",
            "containerRuntimeVersion": "localrunner://0.1.0",
            "kubeletVersion": "v0.0.0-lightbox-localrunner",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": node_labels(config)["kubernetes.io/arch"],
        },
    }


def node_lease(node_name: str, node_uid: str, now: datetime, duration_seconds: int = 40) -> dict[str, Any]:
    """The kube-node-lease heartbeat the node lifecycle controller prefers."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node_name,
            "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}],
        },
        "spec": {"holderIdentity": node_name, "leaseDurationSeconds": duration_seconds, "renewTime": micro_time(now)},
    }


# --- events -------------------------------------------------------------------------


def pod_event(
    pod: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    warning: bool,
    node_name: str,
    now: datetime,
    container: str | None = None,
) -> dict[str, Any]:
    """A core/v1 Event as the kubelet records it, so ``kubectl describe pod`` tells the story."""
    metadata = pod.get("metadata", {})
    involved: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": metadata.get("name", ""),
        "namespace": metadata.get("namespace", ""),
        "uid": metadata.get("uid", ""),
    }
    if container:
        init = {c["name"] for c in pod.get("spec", {}).get("initContainers") or []}
        involved["fieldPath"] = f"spec.{'initContainers' if container in init else 'containers'}{{{container}}}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata.get('name', 'pod')}.", "namespace": metadata.get("namespace", "")},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "lightbox-local-runner", "host": node_name},
        "reportingComponent": "lightbox-local-runner",
        "reportingInstance": node_name,
        "firstTimestamp": rfc3339(now),
        "lastTimestamp": rfc3339(now),
        "count": 1,
    }
