"""The development runner: a stand-in kubelet that runs Lightbox pods as local processes.

DEVELOPMENT ONLY. There is no kubelet and no container runtime on a developer
machine, so this registers one Node, binds the pods labelled
``lightbox.dev/component`` to it, and runs their containers (init containers in
order, then the main ones) as processes inside ``lightbox.sandbox.isolation``'s
network-less sandbox. Images map to local entry points, volumes to host
directories, and the results are written back to the API server the way a
kubelet writes them, so the Job controller and the operator see a real run.
It never runs a container without isolation: if isolation is unavailable the
container fails with ``StartError``.

Start it from a test or a demo::

    runner = LocalRunner(api_client, RunnerConfig(claims={...}, images={...}))
    runner.start()            # background thread; or run_forever(stop_event)
    ...
    runner.stop()

or as ``lightbox local-runner --config runner.yaml`` (a separate process).
The pure parts live in ``localrunner_spec`` (pod spec -> processes) and
``localrunner_status`` (results -> status dicts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from lightbox.api.run import LABEL_COMPONENT
from lightbox.devtools.localrunner_config import RunnerConfig, load_config
from lightbox.devtools.localrunner_spec import (
    POD_MARKER_ENV,
    ContainerPlan,
    PodConfigError,
    PodLayout,
    VolumeError,
    map_volumes,
    plan_container,
    pod_action,
    termination_message,
)
from lightbox.devtools.localrunner_status import (
    PodProgress,
    Running,
    Terminated,
    Waiting,
    derived_phase,
    node_labels,
    node_lease,
    node_manifest,
    node_status,
    pod_event,
    progress_for,
    render_pod_status,
    terminated_state,
    unschedulable_status,
)

__all__ = ["LocalRunner", "RunnerConfig", "load_config", "main"]

log = logging.getLogger("lightbox.localrunner")
# The kubelet's wording for a pod stopped by activeDeadlineSeconds.
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"

Pod = Mapping[str, Any]


class IsolationResultLike(Protocol):
    # Read-only, so both the sandbox's IsolationResult (bytes output) and test doubles (text) fit.
    @property
    def returncode(self) -> int | None: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def seconds(self) -> float: ...
    @property
    def stdout(self) -> bytes | str: ...
    @property
    def stderr(self) -> bytes | str: ...
    @property
    def output_truncated(self) -> bool: ...
    @property
    def memory_exceeded(self) -> bool: ...


Isolate = Callable[..., IsolationResultLike]


class IsolationUnavailableError(Exception):
    """The sandbox cannot be set up here; containers must not run at all."""


def default_isolate(argv: list[str], **kwargs: Any) -> IsolationResultLike:
    """``lightbox.sandbox.isolation.run_isolated``, imported late so the runner
    loads (and reports StartError) even where that module cannot."""
    try:
        from lightbox.sandbox import isolation
    except ImportError as error:
        raise IsolationUnavailableError(f"lightbox.sandbox.isolation is not importable: {error}") from error
    try:
        return isolation.run_isolated(argv, **kwargs)
    except isolation.IsolationUnavailable as error:
        raise IsolationUnavailableError(str(error)) from error


def now() -> datetime:
    return datetime.now(UTC)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def read_tail(path: Path, limit: int = 4096) -> bytes:
    """The last ``limit`` bytes, as the kubelet reads a termination message file."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read()
    except OSError:
        return b""


def kill_pod_processes(uid: str, proc: Path = Path("/proc")) -> int:
    """SIGKILL every process whose environment carries this pod's marker."""
    marker = f"{POD_MARKER_ENV}={uid}".encode() + b"\0"
    killed = 0
    for entry in proc.glob("[0-9]*"):
        try:
            if marker not in (entry / "environ").read_bytes():
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
        except (OSError, ValueError):
            continue
    return killed


@dataclass
class _Active:
    cancel: threading.Event
    reason: str = ""  # why it was cancelled: "deleted" or "stopped"


class LocalRunner:
    """One development node: binds labelled pods to itself and executes them."""

    def __init__(
        self,
        api_client: Any,
        config: RunnerConfig,
        *,
        isolate: Isolate | None = None,
        host_env: Mapping[str, str] | None = None,
    ) -> None:
        from kubernetes import client

        self.config = config
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.isolate: Isolate = isolate or default_isolate
        self.host_env = dict(os.environ if host_env is None else host_env)
        self.labels = node_labels(config)
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._done: set[str] = set()
        self._unschedulable: set[str] = set()
        self._ready_since = now()
        self._node_uid = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    # --- the node ---------------------------------------------------------------

    def register_node(self) -> None:
        from kubernetes.client.rest import ApiException

        manifest = node_manifest(self.config)
        try:
            created = self.core.create_node(manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            created = self.core.patch_node(
                self.config.node_name, {"metadata": manifest["metadata"], "spec": manifest["spec"]}
            )
        self._node_uid = created.metadata.uid
        self._ready_since = now()
        self.heartbeat()
        log.info("registered node %s", self.config.node_name)

    def heartbeat(self) -> None:
        """Keep Ready fresh (status and lease), or the node lifecycle controller evicts our pods."""
        from kubernetes.client.rest import ApiException

        moment = now()
        self.core.patch_node_status(
            self.config.node_name, {"status": node_status(self.config, ready_since=self._ready_since, now=moment)}
        )
        lease = node_lease(self.config.node_name, self._node_uid, moment)
        try:
            self.coordination.patch_namespaced_lease(self.config.node_name, "kube-node-lease", {"spec": lease["spec"]})
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", lease)

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        from kubernetes.client.rest import ApiException

        while not stop.wait(self.config.heartbeat_seconds):
            try:
                self.heartbeat()
            except ApiException as error:
                log.warning("node heartbeat failed (%s); re-registering", error.status)
                self._try(self.register_node)
            except Exception:  # noqa: BLE001 - a dev node keeps beating through API hiccups
                log.exception("node heartbeat failed")

    # --- entry points -------------------------------------------------------------

    def run_once(self) -> int:
        """Register, then execute every pod that is ours right now; returns how many ran."""
        self.register_node()
        started = 0
        for pod in self._list_pods()[0]:
            if self._claim(pod):
                started += 1
                self._execute(pod)
        return started

    def run_forever(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; pods still running then are killed and failed."""
        self._retry_until(self.register_node, stop)
        beat = threading.Thread(target=self._heartbeat_loop, args=(stop,), name="localrunner-heartbeat", daemon=True)
        beat.start()
        self._pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="localrunner-pod")
        try:
            while not stop.is_set():
                try:
                    self._watch_once(stop)
                except Exception:  # noqa: BLE001 - log and relist, like any controller
                    log.exception("pod watch failed; relisting")
                    stop.wait(2)
        finally:
            self._cancel_all("stopped")
            self._pool.shutdown(wait=True, cancel_futures=True)
            beat.join(timeout=5)
            if self.config.delete_node_on_exit:
                self._try(lambda: self.core.delete_node(self.config.node_name))

    def start(self) -> threading.Thread:
        """Run in a daemon thread (tests, demo); ``stop()`` ends it."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, args=(self._stop,), name="localrunner", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> LocalRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- watching -----------------------------------------------------------------

    def _list_pods(self) -> tuple[list[dict[str, Any]], str]:
        response = self.core.list_pod_for_all_namespaces(label_selector=LABEL_COMPONENT, _preload_content=False)
        body = json.loads(response.data)
        return body.get("items", []), body.get("metadata", {}).get("resourceVersion", "")

    def _watch_once(self, stop: threading.Event) -> None:
        from kubernetes import watch

        pods, version = self._list_pods()
        self._forget_missing({p["metadata"]["uid"] for p in pods})
        for pod in pods:
            self._dispatch(pod)
        stream = watch.Watch()
        for event in stream.stream(
            self.core.list_pod_for_all_namespaces,
            label_selector=LABEL_COMPONENT,
            resource_version=version,
            timeout_seconds=self.config.watch_seconds,
            _request_timeout=self.config.watch_seconds + 10,
        ):
            if stop.is_set():
                stream.stop()
                return
            kind, pod = event["type"], event["raw_object"]
            if kind == "ERROR":
                return
            if kind == "DELETED":
                self._cancel(pod["metadata"]["uid"], "deleted")
            else:
                self._dispatch(pod)

    def _forget_missing(self, present: set[str]) -> None:
        with self._lock:
            self._done &= present
            self._unschedulable &= present
            gone = [uid for uid in self._active if uid not in present]
        for uid in gone:
            self._cancel(uid, "deleted")

    def _dispatch(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        action = pod_action(pod, self.config.node_name, self.labels, self.config.node_taints)
        if action == "finalize":
            self._cancel(uid, "deleted")
            if not self._is_active(uid):
                self._try(lambda: self._delete_now(pod))
        elif action in ("bind", "run", "orphaned"):
            if self._claim(pod):
                assert self._pool is not None
                self._pool.submit(self._execute_logged, pod)
        elif action == "unschedulable":
            self._report_unschedulable(pod)

    def _claim(self, pod: Pod) -> bool:
        """Take a pod exactly once, whatever mix of list and watch events shows it."""
        uid = pod["metadata"]["uid"]
        action = pod_action(pod, self.config.node_name, self.labels, self.config.node_taints)
        if action not in ("bind", "run", "orphaned"):
            return False
        with self._lock:
            if uid in self._active or uid in self._done:
                return False
            self._active[uid] = _Active(threading.Event())
        return True

    def _is_active(self, uid: str) -> bool:
        with self._lock:
            return uid in self._active

    def _cancel(self, uid: str, reason: str) -> None:
        with self._lock:
            active = self._active.get(uid)
            if active is None or active.cancel.is_set():
                return
            active.reason = reason
            active.cancel.set()
        killed = kill_pod_processes(uid)
        log.info("pod %s %s; killed %d process(es)", uid, reason, killed)
        # A container may be spawned just after that sweep (its Running status is
        # written before the process starts): keep sweeping until the pod's thread ends.
        threading.Thread(target=self._reap, args=(uid,), name=f"localrunner-reap-{uid[:8]}", daemon=True).start()

    def _reap(self, uid: str) -> None:
        while True:
            time.sleep(0.5)
            # Looked at after the pause: a sweep once the pod has ended could hit the next
            # pod of that uid (tests reuse one) or, in principle, a recycled one.
            if not self._is_active(uid):
                return
            kill_pod_processes(uid)

    def _cancel_all(self, reason: str) -> None:
        with self._lock:
            uids = list(self._active)
        for uid in uids:
            self._cancel(uid, reason)

    # --- executing one pod ------------------------------------------------------------

    def _execute_logged(self, pod: dict[str, Any]) -> None:
        try:
            self._execute(pod)
        except Exception:  # noqa: BLE001 - one broken pod must not stop the node
            log.exception("executing pod %s/%s failed", pod["metadata"].get("namespace"), pod["metadata"].get("name"))

    def _execute(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            active = self._active[uid]
        if active.cancel.is_set():  # cancelled while queued: leave the pod to the next runner
            with self._lock:
                self._active.pop(uid, None)
            return
        layout = PodLayout(self.config.work_dir / f"{pod['metadata']['namespace']}_{pod['metadata']['name']}_{uid[:8]}")
        execution = _PodExecution(self, pod, layout, active)
        try:
            execution.run()
        finally:
            with self._lock:
                self._active.pop(uid, None)
                if not execution.retry:
                    self._done.add(uid)
            if not self.config.keep_workdirs:
                shutil.rmtree(layout.root, ignore_errors=True)
            if active.reason == "deleted":
                self._try(lambda: self._delete_now(pod))

    # --- API writes ---------------------------------------------------------------------

    def bind(self, pod: Pod) -> bool:
        """Bind to this node; False when another binder (a real scheduler) chose another node."""
        from kubernetes.client.rest import ApiException

        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.node_name},
        }
        try:
            # The generated client cannot deserialize the Binding response (kubernetes-client/python#825).
            self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
        except ApiException as error:
            if error.status != 409:
                raise
            current = self.core.read_namespaced_pod(name, namespace)
            return bool(current.spec.node_name == self.config.node_name)
        log.info("bound %s/%s to %s", namespace, name, self.config.node_name)
        self.event(pod, "Scheduled", f"Successfully assigned {namespace}/{name} to {self.config.node_name}")
        return True

    def event(
        self, pod: Pod, reason: str, message: str, *, warning: bool = False, container: str | None = None
    ) -> None:
        """Best effort, like the kubelet's: a lost event must not stop a run."""
        body = pod_event(
            pod,
            reason=reason,
            message=message,
            warning=warning,
            node_name=self.config.node_name,
            now=now(),
            container=container,
        )
        self._try(lambda: self.core.create_namespaced_event(pod["metadata"]["namespace"], body))

    def patch_status(self, pod: Pod, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"], {"status": status})

    def _delete_now(self, pod: Pod) -> None:
        """What a kubelet does once a terminating pod's processes are gone."""
        from kubernetes.client.rest import ApiException

        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}}
        try:
            self.core.delete_namespaced_pod(pod["metadata"]["name"], pod["metadata"]["namespace"], body=body)
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def _report_unschedulable(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            if uid in self._unschedulable:
                return
            self._unschedulable.add(uid)
        message = (
            f"0/1 nodes are available: node {self.config.node_name} didn't match Pod's node selector or tolerations."
        )
        previous = (pod.get("status") or {}).get("conditions") or []
        log.info(
            "pod %s/%s does not fit %s", pod["metadata"]["namespace"], pod["metadata"]["name"], self.config.node_name
        )
        self._try(lambda: self.patch_status(pod, unschedulable_status(message, previous, now())))

    def _try(self, action: Callable[[], object]) -> bool:
        try:
            action()
            return True
        except Exception as error:  # noqa: BLE001 - a dev kubelet logs and carries on
            log.warning("API call failed: %s", error)
            return False

    def _retry_until(self, action: Callable[[], object], stop: threading.Event) -> None:
        while not stop.is_set():
            if self._try(action):
                return
            stop.wait(2)


class _PodExecution:
    """Runs one pod's containers in order and reports each step (one thread)."""

    def __init__(self, runner: LocalRunner, pod: dict[str, Any], layout: PodLayout, active: _Active) -> None:
        self.runner = runner
        self.config = runner.config
        self.pod = pod
        self.layout = layout
        self.active = active
        self.conditions: list[dict[str, Any]] = list((pod.get("status") or {}).get("conditions") or [])
        self.progress: PodProgress = progress_for(pod, now())
        self.finished = False
        self.retry = False  # not bound (API error): the next relist tries again
        deadline = pod.get("spec", {}).get("activeDeadlineSeconds")
        self.deadline: float | None = time.monotonic() + float(deadline) if deadline is not None else None

    @property
    def name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def run(self) -> None:
        action = pod_action(self.pod, self.config.node_name, self.runner.labels, self.config.node_taints)
        if action == "bind":
            try:
                if not self.runner.bind(self.pod):
                    return
            except Exception as error:  # noqa: BLE001 - API hiccup: leave it for the next relist
                log.warning("binding %s failed: %s", self.name, error)
                self.retry = True
                return
        if action == "orphaned":
            self.finish("Failed", "NodeRestarted", "the local runner restarted while this pod was running")
            return
        start = (self.pod.get("status") or {}).get("startTime")
        if start:
            self.progress.start_time = datetime.fromisoformat(start.replace("Z", "+00:00"))
        self.report()
        try:
            volumes = map_volumes(self.pod, self.config.claims, self.layout.empty_dirs)
            self.prepare(volumes)
        except PodConfigError as error:
            self.runner.event(self.pod, error.reason, error.message, warning=True)
            self.finish("Failed", error.reason, error.message)
            return
        spec = self.pod["spec"]
        for container in spec.get("initContainers") or []:
            if self.finished or self.stopped() or not self.run_container(container, volumes):
                return self.wrap_up()
        # A kubelet starts the main containers together; one after the other
        # is enough here, and each still runs even if an earlier one failed.
        for container in spec.get("containers") or []:
            if self.finished or self.stopped():
                break
            self.run_container(container, volumes)
        self.wrap_up()

    def prepare(self, volumes: Mapping[str, Any]) -> None:
        for volume in volumes.values():
            if volume.kind == "emptyDir":
                volume.path.mkdir(parents=True, exist_ok=True)
            elif not volume.path.is_dir():
                raise VolumeError(f'host directory {volume.path} for volume "{volume.name}" does not exist')
        for name, _ in [*self.progress.init, *self.progress.main]:
            for path in (
                self.layout.termination_log(name).parent,
                self.layout.log_file(name).parent,
                self.layout.scratch(name),
            ):
                path.mkdir(parents=True, exist_ok=True)

    def stopped(self) -> bool:
        return self.active.cancel.is_set() or self.deadline_passed()

    def deadline_passed(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def run_container(self, container: Mapping[str, Any], volumes: Mapping[str, Any]) -> bool:
        """Run one container to completion; False when the pod cannot go on."""
        name = str(container["name"])
        try:
            plan = plan_container(
                self.pod,
                container,
                volumes=volumes,
                layout=self.layout,
                config=self.config,
                host_env=self.runner.host_env,
                other_pods=[path for path in self.config.work_dir.iterdir() if path != self.layout.root],
            )
        except PodConfigError as error:
            return self.refuse(name, error)
        for mount in plan.mounts:
            mount.host_path.mkdir(parents=True, exist_ok=True)
        plan.termination_log.write_bytes(b"")
        started = now()
        self.progress.states[name] = Running(started)
        self.report()
        self.runner.event(self.pod, "Started", f"Started container {name}: {' '.join(plan.argv)[:300]}", container=name)
        terminated = self.execute(plan, started)
        if terminated.reason != "Completed":
            note = f"Container {name} ended: exit code {terminated.exit_code} ({terminated.reason})"
            self.runner.event(
                self.pod, "Killing" if terminated.exit_code == 137 else "Failed", note, warning=True, container=name
            )
        self.progress.states[name] = terminated
        log.info("%s: container %s exited %d (%s)", self.name, name, terminated.exit_code, terminated.reason)
        if terminated.reason == "DeadlineExceeded":
            # One write with the pod's reason, as a kubelet does: a bare Failed
            # first would read as the container's own failure.
            self.finish("Failed", "DeadlineExceeded", DEADLINE_MESSAGE)
            return False
        self.report()
        return terminated.succeeded

    def refuse(self, name: str, error: PodConfigError) -> bool:
        """Image pull and config failures leave the container waiting, as a kubelet does."""
        self.runner.event(self.pod, "Failed", error.message, warning=True, container=name)
        if error.reason == "StartError":
            self.progress.states[name] = Terminated(128, "StartError", now(), now(), error.message)
            return False
        self.progress.states[name] = Waiting(error.reason, error.message)
        self.report()
        if error.reason == "ErrImagePull":
            self.active.cancel.wait(self.config.image_pull_backoff_seconds)
            self.progress.states[name] = Waiting("ImagePullBackOff", f"Back-off pulling image: {error.message}")
        self.finish("Failed", error.reason, error.message)
        return False

    def execute(self, plan: ContainerPlan, started: datetime) -> Terminated:
        remaining = self.deadline - time.monotonic() if self.deadline is not None else None
        timeout = (
            min(self.config.container_timeout_seconds, remaining)
            if remaining is not None
            else self.config.container_timeout_seconds
        )
        if timeout <= 0:
            return terminated_state(
                returncode=0, timed_out=True, deadline_exceeded=True, message="", started_at=started, finished_at=now()
            )
        # Only when set, so an isolate without file-size limits still fits.
        limits = {
            key: value
            for key, value in (("max_file_bytes", plan.max_file_bytes), ("max_memory_bytes", plan.max_memory_bytes))
            if value is not None
        }
        if self.active.cancel.is_set():
            return Terminated(137, "Error", started, now(), f"killed: pod {self.active.reason}")
        try:
            result = self.runner.isolate(
                plan.argv,
                **limits,
                env=plan.env,
                read_only=plan.read_only,
                # A path that does not exist holds nothing to hide (and cannot be mounted over).
                hidden=[path for path in plan.hidden if path.exists()],
                timeout=timeout,
                max_output_bytes=self.config.max_output_bytes,
                cwd=plan.cwd,
            )
        except Exception as error:  # noqa: BLE001 - isolation unavailable or broken: never run without it
            log.error("%s: cannot start %s in isolation: %s", self.name, plan.name, error)
            return Terminated(128, "StartError", started, now(), f"isolation unavailable: {error}")
        output = _text(result.stdout) + _text(result.stderr)
        self.runner_log(plan.name, result, output)
        deadline_hit = (
            bool(result.timed_out) and remaining is not None and remaining <= self.config.container_timeout_seconds
        )
        if self.active.cancel.is_set() and not result.timed_out:
            return Terminated(137, "Error", started, now(), f"killed: pod {self.active.reason}")
        message = termination_message(read_tail(plan.termination_log), output, result.returncode, plan.fallback_to_logs)
        return terminated_state(
            returncode=result.returncode,
            timed_out=bool(result.timed_out),
            deadline_exceeded=deadline_hit,
            oom_killed=bool(result.memory_exceeded),
            message=message,
            started_at=started,
            finished_at=now(),
        )

    def runner_log(self, name: str, result: IsolationResultLike, output: str) -> None:
        path = self.layout.log_file(name)
        path.write_text(output, encoding="utf-8")
        if result.output_truncated:
            with path.open("a", encoding="utf-8") as handle:
                handle.write("\n[local runner: output truncated]\n")
        log.debug("%s: %s output:\n%s", self.name, name, output[-4000:])

    def wrap_up(self) -> None:
        if self.finished:
            return
        if self.active.cancel.is_set():
            if self.active.reason == "stopped":
                self.finish("Failed", "NodeShutdown", "the local runner stopped while this pod was running")
            return  # a deleted pod is not written to again
        if self.deadline_passed() or any(
            isinstance(s, Terminated) and s.reason == "DeadlineExceeded" for s in self.progress.states.values()
        ):
            self.finish("Failed", "DeadlineExceeded", DEADLINE_MESSAGE)
            return
        self.finish(derived_phase(self.progress), "", "")

    def finish(self, phase: str, reason: str, message: str) -> None:
        self.progress.phase = phase  # type: ignore[assignment]
        self.progress.reason = reason
        self.progress.message = message
        self.finished = True
        self.report()
        log.info("%s: %s%s", self.name, phase, f" ({reason})" if reason else "")

    def report(self) -> None:
        if self.progress.phase not in ("Succeeded", "Failed"):
            self.progress.phase = derived_phase(self.progress)
        status = render_pod_status(
            self.progress, host_ip=self.config.host_ip, previous_conditions=self.conditions, now=now()
        )
        self.conditions = status["conditions"]
        if self.active.reason == "deleted":
            return
        self.runner._try(lambda: self.runner.patch_status(self.pod, status))


# --- CLI -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightbox local-runner",
        description="DEVELOPMENT ONLY: a stand-in kubelet. Registers a node and runs pods labelled "
        f"{LABEL_COMPONENT} as local, network-isolated processes, writing their status back like a kubelet.",
    )
    parser.add_argument(
        "--config", type=Path, help="runner config (YAML or JSON); see lightbox.devtools.localrunner_config"
    )
    parser.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig of the API server (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--once", action="store_true", help="run the pods waiting now, then exit")
    parser.add_argument("--print-config", action="store_true", help="print the effective config as YAML and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log container output too")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_config(args.config)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if not args.verbose:
        logging.getLogger("kubernetes").setLevel(logging.WARNING)
    from kubernetes import config as kube_config

    api_client = kube_config.new_client_from_config(config_file=str(args.kubeconfig) if args.kubeconfig else None)
    runner = LocalRunner(api_client, config)
    if args.once:
        runner.run_once()
        return 0
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    log.warning("lightbox local-runner is a DEVELOPMENT tool; node %s is not a real kubelet", runner.config.node_name)
    runner.run_forever(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
