"""The controller: Validations, Datasets and SandboxPolicies reconciled against the cluster.

Level-triggered: every pass reads the object, what it depends on and what it
owns (Jobs, Pods) from the API server, and derives the next step from that
alone. Nothing is remembered between passes that the cluster does not also
hold, so a restarted operator picks up exactly where the last one stopped:

* a run's record is written to status (phase Queued, deterministic name)
  *before* its Job is created, and the Job is created only if absent;
* a run's result is derived from its Job and Pod, which outlive the operator,
  and written to status in one patch.

The decisions themselves are pure functions in ``runs``, ``outcome``,
``builders``, ``admission`` and ``verdict``; this module does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from lightbox.api import Algorithm, AlgorithmApproval, Dataset, SandboxPolicy, Validation
from lightbox.api import run as layout
from lightbox.api.audit import Drift
from lightbox.api.common import Condition
from lightbox.api.policy import NamespaceIsolation
from lightbox.api.results import ScoreReport
from lightbox.api.validation import RunRecord, ValidationStatus
from lightbox.operator import admission as admission_mod
from lightbox.operator import approvals as approvals_mod
from lightbox.operator import audit, builders, outcome, runs, verdict
from lightbox.operator import drift as drift_mod
from lightbox.operator.config import OperatorConfig
from lightbox.operator.exporter import Exporter
from lightbox.operator.kube import Kube, KubeError, path
from lightbox.operator.workqueue import WorkQueue

log = logging.getLogger("lightbox.operator")

VALIDATION, DATASET, POLICY, ALGORITHM = "validation", "dataset", "policy", "algorithm"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL = "job-name"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Runtime:
    """Everything the controller shares across passes; owned by one operator instance (kopf memo)."""

    config: OperatorConfig
    kube: Kube
    exporter: Exporter
    queue: WorkQueue = field(default_factory=WorkQueue)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # namespace -> {(validation, number): entry}: runs waiting for a slot, for FIFO order.
    queued: dict[str, dict[tuple[str, int], runs.QueueEntry]] = field(default_factory=dict)
    # namespace -> names of Validations seen by the watch (to wake dependents).
    validations: dict[str, set[str]] = field(default_factory=dict)
    # Validations present at start-up that have not been reconciled yet: until they
    # have, the queue order is unknown, so no new run starts.
    unsynced: set[tuple[str, str]] | None = None
    # namespace -> {name: creationTimestamp} of Validations the watch delivered that have not
    # finished a pass yet: a run of a Validation created after them must not jump ahead.
    unreconciled: dict[str, dict[str, str]] = field(default_factory=dict)

    def earlier_unreconciled(self, namespace: str, name: str, created: str) -> int:
        """Validations created before this one (ties by name, as the queue orders) not yet through a pass."""
        mine = (created, name)
        return sum((when, other) < mine for other, when in self.unreconciled.get(namespace, {}).items())
    api_server: str = ""
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    # namespace -> {Job name: GPUs} of unfinished run Jobs. Filled by one LIST, then
    # kept current by our own creations and the Job watch, so a start decision under
    # the namespace lock costs no LIST (which grows with the number of Jobs).
    active_jobs: dict[str, dict[str, int]] = field(default_factory=dict)
    active_jobs_loaded: dict[str, float] = field(default_factory=dict)
    # Watch-fed copies of Algorithms and Datasets ((plural, namespace, name) -> object)
    # and of the SandboxPolicy list, so a reconciliation does not GET what the watch
    # already delivered. A miss falls back to the API server.
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    policies: list[dict[str, Any]] | None = None
    policies_loaded: float = -1e9
    # (namespace, name) -> resourceVersion of our last status write, to ignore its echo.
    own_writes: dict[tuple[str, str], str] = field(default_factory=dict)

    def observe(self, plural: str, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        if obj is None:
            self.objects.pop((plural, namespace, name), None)
        else:
            self.objects[(plural, namespace, name)] = obj

    def observe_job(self, namespace: str, job: dict[str, Any], deleted: bool) -> None:
        jobs = self.active_jobs.get(namespace)
        if jobs is None:
            return  # not loaded yet: the first LIST will include it
        name = job["metadata"]["name"]
        if deleted or outcome.job_finished(job) or job["metadata"].get("deletionTimestamp"):
            jobs.pop(name, None)
        else:
            jobs[name] = _job_gpus(job)

    def lock(self, namespace: str) -> asyncio.Lock:
        return self.locks.setdefault(namespace, asyncio.Lock())

    def crash(self, point: str) -> None:
        """Restart-safety test hook: die like a SIGKILL at a named point."""
        if self.config.crash_at == point:
            log.warning("crash hook %s: exiting abruptly", point)
            logging.shutdown()
            os._exit(86)

    def wake_validation(self, namespace: str, name: str, delay: float = 0.0) -> None:
        self.queue.add((VALIDATION, namespace, name), delay)

    def wake_namespace(self, namespace: str) -> None:
        for name in sorted(self.validations.get(namespace, ())):
            self.wake_validation(namespace, name)

    def wake_all(self) -> None:
        for namespace in sorted(self.validations):
            self.wake_namespace(namespace)

    def wake_algorithms(self) -> None:
        """Policies changed: every Algorithm's Allowed condition may have too."""
        for plural, namespace, name in sorted(self.objects):
            if plural == "algorithms":
                self.queue.add((ALGORITHM, namespace, name))

    @property
    def synced(self) -> bool:
        return self.unsynced is not None and not self.unsynced

    # -- the worker pool ------------------------------------------------------

    def start(self) -> None:
        for index in range(self.config.workers):
            self.workers.append(asyncio.create_task(self._worker(), name=f"lightbox-worker-{index}"))

    async def stop(self) -> None:
        for task in self.workers:
            task.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.queue.close()
        await self.kube.close()

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            delay: float | None = None
            began = asyncio.get_running_loop().time()
            try:
                kind, *rest = key  # type: ignore[misc]
                if kind == VALIDATION:
                    delay = await reconcile_validation(self, *rest)
                elif kind == DATASET:
                    delay = await reconcile_dataset(self, *rest)
                elif kind == POLICY:
                    delay = await reconcile_policy(self, *rest)
                elif kind == ALGORITHM:
                    delay = await reconcile_algorithm(self, *rest)
                log.debug("reconciled %s in %.3f s; again in %s s", key, asyncio.get_running_loop().time() - began, delay)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001  (one bad object must not stop the others)
                log.exception("reconciling %s failed; retrying", key)
                delay = 5.0
            finally:
                self.queue.done(key)
            if delay:
                self.queue.add(key, delay)


# -- small helpers ------------------------------------------------------------


def set_condition(
    conditions: list[Condition] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """Replace one condition, keeping its transition time when the status did not change."""
    out = [c for c in conditions or [] if c.type != type_]
    previous = next((c for c in conditions or [] if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    out.append(
        Condition(
            type=type_,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            message=message[:4096],
            last_transition_time=since,
            observed_generation=generation,
        )
    )
    return sorted(out, key=lambda c: c.type)


async def post_event(
    runtime: Runtime, obj: dict[str, Any], type_: str, reason: str, message: str
) -> None:
    meta = obj["metadata"]
    namespace = meta.get("namespace") or "default"
    now = utcnow().isoformat().replace("+00:00", "Z")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": "lightbox-operator"},
        "reportingComponent": "lightbox.dev/operator",
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await runtime.kube.create(path("events", namespace), event)
    except KubeError as exc:  # Events are best effort; status carries the facts.
        log.warning("could not post event %s: %s", reason, exc)


def _model(cls: type, raw: dict[str, Any] | None) -> Any:
    if raw is None:
        return None
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        log.warning("%s %s does not parse: %s", cls.__name__, raw.get("metadata", {}).get("name"), exc)
        return None


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _job_gpus(job: dict[str, Any]) -> int:
    spec = job["spec"]["template"]["spec"]
    total = 0
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        limit = ((container.get("resources") or {}).get("limits") or {}).get(builders.GPU_RESOURCE)
        if limit:
            total = max(total, int(limit))  # init containers run one at a time
    return total


def _pods_by_job(pods: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        labels = pod["metadata"].get("labels") or {}
        job = labels.get(JOB_NAME_LABEL) or labels.get(LEGACY_JOB_NAME_LABEL)
        if job:
            out[job] = pod
    return out


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- Validation ---------------------------------------------------------------


async def _load_dependencies(
    runtime: Runtime, validation: Validation, namespace: str
) -> tuple[Algorithm | None, Dataset | None, list[SandboxPolicy]]:
    kube = runtime.kube

    async def cached(plural: str, name: str) -> dict[str, Any] | None:
        hit = runtime.objects.get((plural, namespace, name))
        return hit if hit is not None else await kube.get(path(plural, namespace, name))

    algo_raw, data_raw, policies = await asyncio.gather(
        cached("algorithms", validation.spec.algorithm_ref.name),
        cached("datasets", validation.spec.dataset_ref.name),
        _policies(runtime),
    )
    if data_raw is not None and data_raw["metadata"].get("deletionTimestamp"):
        data_raw = None  # being deleted: as good as gone for a run
    return _model(Algorithm, algo_raw), _model(Dataset, data_raw), policies


async def _policies(runtime: Runtime) -> list[SandboxPolicy]:
    """All SandboxPolicies, re-listed at most every resync interval unless a policy event dropped the copy."""
    now = asyncio.get_running_loop().time()
    if runtime.policies is None or now - runtime.policies_loaded > runtime.config.resync_seconds:
        runtime.policies, runtime.policies_loaded = await runtime.kube.list(path("sandboxpolicies")), now
    return [p for p in (_model(SandboxPolicy, raw) for raw in runtime.policies) if p is not None]


async def _approvals(runtime: Runtime, namespace: str, policies: list[SandboxPolicy]) -> list[AlgorithmApproval]:
    """The namespace's AlgorithmApprovals, listed only where the governing policy asks for approvals."""
    selected = admission_mod.select_policy(policies, namespace)
    if isinstance(selected, admission_mod.Problem):
        return []
    if selected.spec.approvals.required == 0 and not selected.spec.approvals.distinct_groups:
        return []
    raws = await runtime.kube.list(path("algorithmapprovals", namespace))
    return [a for a in (_model(AlgorithmApproval, raw) for raw in raws) if a is not None]


def _finish(record: RunRecord, result: outcome.Outcome, validation: Validation, now: datetime) -> RunRecord:
    update: dict[str, Any] = {
        "phase": result.phase,
        "reason": result.reason,
        "message": result.message,
        "finished_at": now,
    }
    report = result.report
    if report is not None:
        criteria, overall = verdict.evaluate(validation.spec.acceptance, report)
        update.update(
            cases=report.cases,
            scored=report.scored,
            failures=report.failures,
            metrics=report.metrics,
            subgroups=report.subgroups or None,
            roc=report.roc or None,
            reliability=report.reliability or None,
            froc=report.froc or None,
            dice_histogram=report.dice_histogram or None,
            criteria=criteria or None,
            verdict=overall,
        )
    return record.model_copy(update=update)


async def _conclude(
    runtime: Runtime,
    validation: Validation,
    record: RunRecord,
    result: outcome.Outcome,
    algorithm: Algorithm | None,
    dataset: Dataset | None,
    policy: SandboxPolicy | None,
    now: datetime,
    drifts: dict[str, Drift | None] | None = None,
    approvals: Sequence[AlgorithmApproval] = (),
) -> RunRecord:
    """The run's final record. The audit trail is the commit point: a record already
    there (written before a restart) is the result; otherwise it is made and written now,
    before status, so a crash in between finds it and status says the same. The run's
    drift against the baseline is judged once, kept in the record, and handed back in ``drifts``."""
    audit_ns = runtime.config.audit_namespace
    chain = await runtime.kube.list(path("auditrecords", audit_ns), audit.chain_selector(validation))
    existing = audit.find_run(chain, record.name)
    if existing is not None:
        if drifts is not None:
            kept = existing["spec"].get("drift")
            drifts[record.name] = Drift.model_validate(kept) if kept else None
        return RunRecord.model_validate(existing["spec"]["run"])
    final = _finish(record, result, validation, now)
    cohort = dataset.status.cohort if dataset is not None and dataset.status is not None else None
    judged = drift_mod.assess(chain, final, cohort, validation.spec.drift)
    if drifts is not None:
        drifts[record.name] = judged
    policy_name = policy.metadata.get("name") if policy else None
    body = audit.audit_record(
        validation, final, algorithm, dataset, policy_name, audit.recorded_by(),
        chain_records=chain, audit_namespace=audit_ns, recorded_at=now,
        evidence=result.report.evidence if result.report is not None else None,
        drift=judged,
        approvals=approvals,
    )
    made, created = await runtime.kube.create(path("auditrecords", audit_ns), body)
    if not created and (made.get("spec") or {}).get("hash") != body["spec"]["hash"]:
        # Another writer took this place in the chain first (the chain's names are its
        # sequence numbers): fail the pass, the next one links after it.
        raise KubeError(409, f"audit chain {validation.metadata['uid']} moved on", "POST", path("auditrecords", audit_ns))
    runtime.crash("after-audit-write")
    return final


async def ensure_audit_namespace(runtime: Runtime, logger: Any) -> None:
    """The chart creates (and keeps) the audit namespace; a development cluster may not have
    it yet, so create it where allowed. Where not (the chart's RBAC), say what is missing:
    every run's conclusion fails until it exists, so no run goes unrecorded."""
    name = runtime.config.audit_namespace
    try:
        if await runtime.kube.get(path("namespaces", None, name)) is not None:
            return
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {layout.LABEL_COMPONENT: audit.COMPONENT_AUDIT}}}
        await runtime.kube.create(path("namespaces"), body)
        logger.info(f"created the audit namespace {name}")
    except KubeError as exc:
        logger.error(f"audit namespace {name}: {exc}; runs cannot be recorded (and so not concluded) until it exists")


async def _start_run(
    runtime: Runtime,
    validation: Validation,
    algorithm: Algorithm,
    dataset: Dataset,
    policy: SandboxPolicy | None,
    record: RunRecord,
) -> bool:
    """Create the run's NetworkPolicy, then its Job; both only if absent."""
    namespace = validation.metadata["namespace"]
    runtime.crash("before-job-create")
    netpol = builders.run_network_policy(validation, record.name)
    # The NetworkPolicy first: the pod must never exist without it.
    await runtime.kube.create(path("networkpolicies", namespace), netpol)
    scheduled = record.scheduled_for.isoformat() if record.scheduled_for else None
    job = builders.run_job(
        validation, algorithm, dataset, policy, record.name, record.number, runtime.config, scheduled, runtime.api_server
    )
    made, created = await runtime.kube.create(path("jobs", namespace), job)
    runtime.observe_job(namespace, made, deleted=False)
    runtime.crash("after-job-create")
    return created


def _wake_heads(runtime: Runtime, namespace: str, count: int) -> None:
    """Wake the Validations of the first ``count`` queued runs in the namespace."""
    if count <= 0:
        return
    for entry in runs.queue_order(runtime.queued.get(namespace, {}).values())[: min(count, 16)]:
        runtime.wake_validation(namespace, entry.validation)


async def _active_jobs(runtime: Runtime, namespace: str) -> dict[str, int]:
    now = asyncio.get_running_loop().time()
    # Re-read now and then, so a missed watch event cannot hold a slot forever.
    if now - runtime.active_jobs_loaded.get(namespace, -1e9) > runtime.config.resync_seconds:
        runtime.active_jobs.pop(namespace, None)
    if namespace not in runtime.active_jobs:
        runtime.active_jobs_loaded[namespace] = now
        jobs = await runtime.kube.list(path("jobs", namespace), f"{layout.LABEL_COMPONENT}={builders.COMPONENT_RUN}")
        runtime.active_jobs[namespace] = {
            j["metadata"]["name"]: _job_gpus(j)
            for j in jobs
            if not outcome.job_finished(j) and not j["metadata"].get("deletionTimestamp")
        }
    return runtime.active_jobs[namespace]


async def _capacity(runtime: Runtime, namespace: str, policy: SandboxPolicy | None) -> runs.Capacity:
    active = await _active_jobs(runtime, namespace)
    spec = policy.spec if policy else None
    runtime.exporter.runs_active.labels(namespace).set(len(active))
    return runs.Capacity(
        active_runs=len(active),
        gpus_in_use=sum(active.values()),
        max_runs=spec.max_concurrent_runs if spec else 1,
        max_gpus=spec.max_gpus_in_use if spec else 0,
    )


def _isolation_gate(policy: SandboxPolicy | None, namespace: str) -> tuple[str, str] | None:
    """(reason, message) when the namespace may not run vendor code yet."""
    if policy is None or not policy.spec.isolation_probe.required:
        return None
    isolation = (policy.status.isolation or {}) if policy.status else {}
    result = isolation.get(namespace)
    if result is None:
        return (
            "AwaitingIsolationProbe",
            f"waiting for the isolation probe of SandboxPolicy {policy.metadata['name']} in namespace {namespace}",
        )
    if not result.isolated:
        return (
            "NamespaceNotIsolated",
            f"the isolation probe in namespace {namespace} reached the network ({result.message or 'see the policy'}); "
            "no vendor container starts here until NetworkPolicies are enforced",
        )
    return None


async def reconcile_validation(runtime: Runtime, namespace: str, name: str) -> float | None:
    raw = await runtime.kube.get(path("validations", namespace, name))
    last_unsynced = runtime.unsynced is not None and runtime.unsynced == {(namespace, name)}
    if runtime.unsynced is not None:
        runtime.unsynced.discard((namespace, name))
    try:
        return await _reconcile_validation(runtime, namespace, name, raw)
    finally:
        pending = runtime.unreconciled.get(namespace)
        if pending is not None and name in pending:
            del pending[name]
            # The head of the queue may have been waiting for this one's first pass.
            _wake_heads(runtime, namespace, 1 if pending else 16)
        if last_unsynced:
            # The queue order is known now: the runs that waited for it may start.
            for queued_namespace in list(runtime.queued):
                _wake_heads(runtime, queued_namespace, 16)


async def _reconcile_validation(runtime: Runtime, namespace: str, name: str, raw: dict[str, Any] | None) -> float | None:
    kube, config = runtime.kube, runtime.config
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        # Owner references take the Jobs, Pods and NetworkPolicies with it.
        for key in [k for k in runtime.queued.get(namespace, {}) if k[0] == name]:
            runtime.queued[namespace].pop(key, None)
        runtime.exporter.forget_validation(namespace, name)
        return None
    validation = _model(Validation, raw)
    if validation is None:
        return None
    now = utcnow()
    status = validation.status or ValidationStatus()
    generation = raw["metadata"].get("generation")
    algorithm, dataset, policies = await _load_dependencies(runtime, validation, namespace)
    approvals = await _approvals(runtime, namespace, policies)
    admission = admission_mod.admit(validation, algorithm, dataset, policies, approvals)
    counted = (
        approvals_mod.tally(algorithm, approvals, admission.policy.spec.approvals).counted
        if algorithm is not None and admission.policy is not None
        else []
    )
    policy = admission.policy
    task = algorithm.spec.task if algorithm else None

    selector = f"{layout.LABEL_COMPONENT}={builders.COMPONENT_RUN},{layout.LABEL_VALIDATION}={builders.label_value(name)}"
    uid = raw["metadata"]["uid"]
    jobs_raw = await kube.list(path("jobs", namespace), selector)
    jobs = {j["metadata"]["name"]: j for j in jobs_raw if _owned_by(j, uid)}
    unfinished = [j for j in jobs.values() if not outcome.job_finished(j)]
    known = {r.name: r for r in status.runs or []}
    # Pods matter only for runs still open; a finished Job whose record is final needs none.
    need_pods = unfinished or any(known.get(n) is None or known[n].phase in runs.ACTIVE_PHASES for n in jobs)
    pods = _pods_by_job(await kube.list(path("pods", namespace), selector)) if need_pods else {}

    records: dict[str, RunRecord] = {r.name: r for r in status.runs or []}
    events: list[tuple[str, str, str]] = []
    finished: list[RunRecord] = []
    drifts: dict[str, Drift | None] = {}
    before = next((c for c in status.conditions or [] if c.type == "Admitted"), None)
    if admission.admitted and before is not None and before.status != "True":
        events.append(("Normal", "Admitted", "the Validation may run now"))
    elif not admission.admitted and (before is None or before.reason != admission.problems[0].reason):
        events.append(("Warning", admission.problems[0].reason, admission.problems[0].message))

    # A Job without a record: status was lost between creating the Job and writing it.
    for job_name, job in jobs.items():
        if job_name not in records and not job["metadata"].get("deletionTimestamp"):
            annotations = job["metadata"].get("annotations") or {}
            number = int(annotations.get(layout.ANNOTATION_RUN_NUMBER, "0") or 0) or runs.next_number(records.values())
            records[job_name] = RunRecord(
                name=job_name,
                number=number,
                phase="Running",
                created_at=_parse_time(job["metadata"].get("creationTimestamp")),
                scheduled_for=_parse_time(annotations.get(builders.ANNOTATION_SCHEDULED_FOR)),
                image=algorithm.spec.image if algorithm else None,
            )

    # Follow active runs to their end.
    for run_name_, record in list(records.items()):
        if record.phase not in runs.ACTIVE_PHASES:
            continue
        job = jobs.get(run_name_)
        if job is None:
            if record.phase == "Running":
                gone = outcome.Outcome("Failed", outcome.JOB_FAILED, "the run's Job was deleted")
                records[run_name_] = await _conclude(runtime, validation, record, gone, algorithm, dataset, policy, now, drifts, counted)
                finished.append(records[run_name_])
            continue
        if outcome.job_finished(job):
            # Only ever *free* a slot from a LIST (finishing is final); a stale LIST
            # must not re-add a Job the watch has already seen finish.
            runtime.observe_job(namespace, job, deleted=True)
        result = outcome.run_outcome(job, pods.get(run_name_))
        if result is None and dataset is None and not outcome.job_finished(job):
            result = outcome.Outcome(
                "Failed",
                outcome.DATASET_DELETED,
                f"Dataset {validation.spec.dataset_ref.name} was deleted while the run was in progress; the run was stopped",
            )
        if result is None:
            suspended = bool(job["spec"].get("suspend"))
            phase = "Queued" if suspended else "Running"
            reason = "KueueAdmissionPending" if suspended else None
            message = "waiting for Kueue to admit the Job" if suspended else None
            if (record.phase, record.reason) != (phase, reason):
                records[run_name_] = record.model_copy(update={"phase": phase, "reason": reason, "message": message})
            continue
        runtime.crash("before-result-write")
        records[run_name_] = await _conclude(runtime, validation, record, result, algorithm, dataset, policy, now, drifts, counted)
        finished.append(records[run_name_])
        if not outcome.job_finished(job) and not outcome.pod_finished(pods.get(run_name_)):
            # Image pull failures and deleted datasets leave a live Job behind: stop it.
            await kube.delete(path("jobs", namespace, run_name_), "Background")
            runtime.observe_job(namespace, job, deleted=True)

    active = [r for r in records.values() if r.phase in runs.ACTIVE_PHASES]
    # An out-of-range schedule blocks admission (InvalidSchedule) and has no ticks.
    scheduled = bool(validation.spec.schedule) and not admission_mod.check_schedule(validation)
    new_record: RunRecord | None = None
    if admission.admitted and not validation.spec.suspend and not active:
        tick: datetime | None = None
        due = False
        if not scheduled:
            due = not records
        else:
            last = max((r.scheduled_for for r in records.values() if r.scheduled_for), default=None)
            created = _parse_time(raw["metadata"].get("creationTimestamp")) or now
            tick = runs.due_tick(validation.spec.schedule, last or created, now)
            due = tick is not None
        if due:
            number = runs.next_number(records.values(), [])
            new_record = RunRecord(
                name=runs.run_name(name, number),
                number=number,
                phase="Queued",
                reason="WaitingForCapacity",
                message="waiting for a run slot",
                created_at=now,
                scheduled_for=tick,
                image=algorithm.spec.image if algorithm else None,
                dataset_hash=dataset.status.content_hash if dataset and dataset.status else None,
            )
            records[new_record.name] = new_record

    # Start the queued run when it is admitted, isolated and first in line.
    started = False
    queued_here = runtime.queued.setdefault(namespace, {})
    for key in [k for k in queued_here if k[0] == name]:
        if runs.run_name(name, key[1]) not in records:
            queued_here.pop(key, None)
    for run_name_, record in sorted(records.items(), key=lambda kv: kv[1].number):
        if record.phase != "Queued" or run_name_ in jobs:
            queued_here.pop((name, record.number), None)
            continue
        gpus = algorithm.spec.resources.gpus if algorithm else 0
        # Arrival comes from the cluster (the schedule tick, else the Validation's creation),
        # not from when this operator happened to look, so the order survives restarts and races.
        entry = runs.QueueEntry(
            queued_at=record.scheduled_for or _parse_time(raw["metadata"].get("creationTimestamp")) or now,
            validation_created=raw["metadata"].get("creationTimestamp") or "",
            validation=name,
            number=record.number,
            gpus=gpus,
        )
        queued_here[(name, record.number)] = entry
        if not admission.admitted:
            problems = "; ".join(f"{p.reason}: {p.message}" for p in admission.problems)
            records[run_name_] = record.model_copy(update={"reason": "NotAdmitted", "message": problems[:2048]})
            continue
        gate = _isolation_gate(policy, namespace)
        if gate is not None:
            records[run_name_] = record.model_copy(update={"reason": gate[0], "message": gate[1]})
            if policy is not None:
                runtime.queue.add((POLICY, policy.metadata["name"]))
            continue
        if not runtime.synced:
            continue
        # No status write before the Job: its name is deterministic and a restarted
        # operator adopts a Job that has no record yet (see above), so the run is
        # neither lost nor duplicated whichever write a crash interrupts.
        async with runtime.lock(namespace):
            capacity = await _capacity(runtime, namespace, policy)
            # Validations created earlier whose first pass has not queued their run yet keep their place too.
            unseen = runtime.earlier_unreconciled(namespace, name, entry.validation_created)
            if runs.may_start(entry, queued_here.values(), capacity, unseen_ahead=unseen):
                assert algorithm is not None and dataset is not None
                try:
                    await _start_run(runtime, validation, algorithm, dataset, policy, record)
                except KubeError as exc:
                    if exc.status not in (400, 422):
                        raise  # conflicts, quota, outages: try again
                    # The API server will never accept this Job: say why instead of retrying forever.
                    queued_here.pop((name, record.number), None)
                    rejected = outcome.Outcome("Failed", "RunRejected", str(exc)[:2048])
                    records[run_name_] = await _conclude(runtime, validation, record, rejected, algorithm, dataset, policy, now, drifts, counted)
                    finished.append(records[run_name_])
                    continue
                queued_here.pop((name, record.number), None)
                suspended = bool(builders.queue_name(validation, policy))
                records[run_name_] = record.model_copy(
                    update={
                        "phase": "Queued" if suspended else "Running",
                        "reason": "KueueAdmissionPending" if suspended else None,
                        "message": "waiting for Kueue to admit the Job" if suspended else None,
                        "created_at": record.created_at or now,
                    }
                )
                log.info("%s/%s: run %s started", namespace, name, run_name_)
                events.append(("Normal", "RunStarted", f"run {run_name_} started (Job {run_name_})"))
                started = True
                # The next in line may fit too; they would otherwise wait for their resync.
                _wake_heads(runtime, namespace, capacity.max_runs - capacity.active_runs - 1)
            elif not capacity.admits(entry.gpus):
                # Volatile counts stay out of status: each change would be a write and a watch event.
                message = (
                    f"namespace {namespace} is at its limit of {capacity.max_runs} concurrent runs and "
                    f"{capacity.max_gpus} GPUs in use; this run needs {entry.gpus} GPUs"
                )
                records[run_name_] = record.model_copy(update={"reason": "WaitingForCapacity", "message": message})
            else:
                message = f"runs queued earlier in namespace {namespace} start first"
                records[run_name_] = record.model_copy(update={"reason": "WaitingInQueue", "message": message})
    runtime.exporter.runs_queued.labels(namespace).set(len(queued_here))

    # Keep the configured history; the Jobs of dropped runs go too.
    kept, dropped = runs.prune(list(records.values()), validation.spec.history_limit)
    for record in dropped:
        await kube.delete(path("jobs", namespace, record.name), "Background")
        await kube.delete(path("networkpolicies", namespace, record.name), "Background")
    records = {r.name: r for r in kept}

    for record in finished:
        ok = record.phase == "Succeeded"
        text = f"run {record.name} {'succeeded' if ok else 'failed'}: {record.reason}: {record.message or ''}".rstrip(": ")
        if ok and record.verdict:
            text += f"; verdict {record.verdict}"
        events.append(("Normal" if ok else "Warning", "RunSucceeded" if ok else record.reason or "RunFailed", text))
        runtime.exporter.record_finished(record.reason or ("Succeeded" if ok else "Failed"))
        judged = drifts.get(record.name)
        if judged is not None:
            # Against the baseline: conditions, a Warning Event per finding, Prometheus series.
            conds = status.conditions
            for type_, value, reason, message in drift_mod.conditions(judged):
                conds = set_condition(conds, type_, value, reason, message, now, generation)
                if value == "True":
                    events.append(("Warning", reason, f"run {record.name}: {message}"[:1024]))
            status = status.model_copy(update={"conditions": conds})
            runtime.exporter.record_drift(namespace, name, judged)

    await _write_status(runtime, raw, status, records, admission, policy, generation, now, scheduled, validation, task)
    for type_, reason, message in events:
        await post_event(runtime, raw, type_, reason, message)
    if finished:
        # A slot freed up: the next queued runs in this namespace may start.
        _wake_heads(runtime, namespace, len(finished))

    latest = runs.latest_finished(records.values())
    if latest is not None and latest.phase == "Succeeded" and latest.metrics:
        runtime.exporter.record_report(namespace, name, _report_of(latest, task), latest.verdict)

    # When to look again without an event.
    if started or any(r.phase in runs.ACTIVE_PHASES for r in records.values()):
        return 10.0 if any(r.phase == "Queued" for r in records.values()) else config.resync_seconds
    if scheduled and not validation.spec.suspend:
        next_at = runs.next_tick(validation.spec.schedule, now)
        return max(1.0, min((next_at - now).total_seconds() + 0.5, 300.0))
    return 300.0


async def _write_status(
    runtime: Runtime,
    raw: dict[str, Any],
    status: ValidationStatus,
    records: dict[str, RunRecord],
    admission: admission_mod.Admission,
    policy: SandboxPolicy | None,
    generation: int | None,
    now: datetime,
    scheduled: bool,
    validation: Validation,
    task: str | None,
) -> None:
    ordered = sorted(records.values(), key=lambda r: r.number)
    if admission.admitted:
        name = policy.metadata.get("name") if policy else "?"
        conditions = set_condition(status.conditions, "Admitted", "True", "Admitted", f"allowed by SandboxPolicy {name}", now, generation)
    else:
        first = admission.problems[0]
        message = "; ".join(f"{p.reason}: {p.message}" for p in admission.problems)
        conditions = set_condition(status.conditions, "Admitted", "False", first.reason, message, now, generation)
    latest = runs.latest_finished(ordered)
    summary = status.summary
    verdict_ = status.verdict
    if latest is not None:
        if latest.phase == "Succeeded" and latest.metrics is not None:
            summary = verdict.summarize(_report_of(latest, task))[:128]
        else:
            summary = f"{latest.reason}"[:128]
        verdict_ = latest.verdict
        ok = latest.phase == "Succeeded"
        conditions = set_condition(
            conditions, "Succeeded", "True" if ok else "False", latest.reason or latest.phase, latest.message or "", now, generation
        )
    new_status = ValidationStatus(
        phase=runs.validation_phase(ValidationStatus(runs=ordered), admission.admitted, scheduled),  # type: ignore[arg-type]
        verdict=verdict_,
        summary=summary,
        conditions=conditions,
        runs=ordered or None,
        last_run_time=max((r.created_at for r in ordered if r.created_at and r.phase != "Queued"), default=status.last_run_time),
        next_run_time=runs.next_tick(validation.spec.schedule, now) if scheduled else None,
        observed_generation=generation,
    )
    body = _dump(new_status)
    if body == _dump(status):
        return
    # Transition times of unchanged conditions stay; the rest of status is replaced.
    body.setdefault("nextRunTime", None)
    namespace, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
    written = await runtime.kube.patch(path("validations", namespace, name, "status"), {"status": body})
    if written is not None:
        runtime.own_writes[(namespace, name)] = written["metadata"]["resourceVersion"]


def _report_of(record: RunRecord, task: str | None) -> ScoreReport:
    """The aggregate part of a stored run, to summarise it and export it again after a restart."""
    if task is None:
        metrics = set(record.metrics or {})
        task = "segmentation" if metrics & {"dice", "iou", "hd95"} else "detection" if "frocSensitivity" in metrics else "classification"
    return ScoreReport(task=task, cases=record.cases or 0, scored=record.scored or 0, metrics=record.metrics or {})  # type: ignore[arg-type]


# -- Algorithm ----------------------------------------------------------------


def algorithm_allowed(
    algorithm: Algorithm, policies: list[SandboxPolicy], namespace: str, approvals: Sequence[AlgorithmApproval] = ()
) -> tuple[str, str, str]:
    """(status, reason, message) of an Algorithm's Allowed condition under the cluster's policies."""
    selected = admission_mod.select_policy(policies, namespace)
    problems = (
        [selected]
        if isinstance(selected, admission_mod.Problem)
        else admission_mod.check_algorithm(algorithm, selected, approvals)
    )
    if problems:
        reason = problems[0].reason if len({p.reason for p in problems}) == 1 else "NotAllowed"
        return "False", reason, "; ".join(p.message for p in problems)
    return "True", "PolicyAllows", f"SandboxPolicy {selected.metadata.get('name')} allows its registry, resources and timeout"


async def reconcile_algorithm(runtime: Runtime, namespace: str, name: str) -> float | None:
    raw = await runtime.kube.get(path("algorithms", namespace, name))
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        return None
    algorithm = _model(Algorithm, raw)
    if algorithm is None:
        return None
    generation = raw["metadata"].get("generation")
    policies = await _policies(runtime)
    status, reason, message = algorithm_allowed(
        algorithm, policies, namespace, await _approvals(runtime, namespace, policies)
    )
    current = algorithm.status
    previous = next((c for c in (current.conditions or []) if c.type == "Allowed"), None) if current else None
    if previous and (previous.status, previous.reason, previous.message, previous.observed_generation) == (
        status, reason, message, generation
    ):
        return None  # nothing new; also ends the echo of our own write
    now = utcnow()
    conditions = set_condition(current.conditions if current else None, "Allowed", status, reason, message, now, generation)
    body = {
        "conditions": [_dump(c) for c in conditions],
        "observedGeneration": generation,
        "lastChecked": now.isoformat().replace("+00:00", "Z"),
    }
    written = await runtime.kube.patch(path("algorithms", namespace, name, "status"), {"status": body})
    runtime.observe("algorithms", namespace, name, written)
    if status == "False":
        await post_event(runtime, raw, "Warning", reason, message)
    return None


# -- Dataset ------------------------------------------------------------------


async def reconcile_dataset(runtime: Runtime, namespace: str, name: str) -> float | None:
    kube = runtime.kube
    raw = await kube.get(path("datasets", namespace, name))
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        runtime.wake_namespace(namespace)
        return None
    dataset = _model(Dataset, raw)
    if dataset is None:
        return None
    generation = raw["metadata"].get("generation", 1)
    status = dataset.status
    if status is not None and status.observed_generation == generation and status.phase in {"Verified", "Rejected", "Error"}:
        return None
    now = utcnow()
    job_name = builders.verify_job_name(name, generation)
    job = await kube.get(path("jobs", namespace, job_name))
    if job is None:
        await kube.create(path("networkpolicies", namespace), builders.verify_network_policy(dataset, job_name))
        job, _ = await kube.create(path("jobs", namespace), builders.verify_job(dataset, job_name, runtime.config))
    pods = await kube.list(path("pods", namespace), f"{JOB_NAME_LABEL}={job_name}")
    pod = _pods_by_job(pods).get(job_name)
    result = outcome.verify_result(job, pod)
    conditions = status.conditions if status else None
    if result is None:
        if status is None or status.phase != "Verifying" or status.verified:
            body = {
                "phase": "Verifying",
                "verified": False,
                "conditions": [
                    _dump(c)
                    for c in set_condition(conditions, "Verified", "Unknown", "Verifying", f"Job {job_name} is checking the studies", now, generation)
                ],
            }
            written = await kube.patch(path("datasets", namespace, name, "status"), {"status": body})
            runtime.observe("datasets", namespace, name, written)
            runtime.wake_namespace(namespace)
        return 15.0
    summary = result.summary
    body: dict[str, Any] = {
        "phase": result.phase,
        "verified": result.verified,
        "verifiedAt": now.isoformat().replace("+00:00", "Z"),
        "contentHash": summary.get("contentHash"),
        "caseCount": summary.get("caseCount"),
        "fileCount": summary.get("fileCount"),
        "cohort": summary.get("cohort"),
        "violations": summary.get("violations") or None,
        "observedGeneration": generation,
        "conditions": [
            _dump(c)
            for c in set_condition(
                conditions, "Verified", "True" if result.verified else "False", result.reason, result.message, now, generation
            )
        ],
    }
    written = await kube.patch(path("datasets", namespace, name, "status"), {"status": body})
    runtime.observe("datasets", namespace, name, written)  # the Validations woken below must see it
    await post_event(runtime, raw, "Normal" if result.verified else "Warning", result.reason, result.message)
    runtime.wake_namespace(namespace)
    return None


# -- SandboxPolicy: the isolation probe ----------------------------------------


def _governs(policy: SandboxPolicy, namespace: str) -> bool:
    return not policy.spec.namespaces or namespace in policy.spec.namespaces


async def reconcile_policy(runtime: Runtime, name: str) -> float | None:
    kube, config = runtime.kube, runtime.config
    raw = await kube.get(path("sandboxpolicies", None, name))
    if raw is None or raw["metadata"].get("deletionTimestamp"):
        runtime.wake_all()
        return None
    policy = _model(SandboxPolicy, raw)
    if policy is None:
        return None
    now = utcnow()
    interval = policy.spec.isolation_probe.interval_seconds
    isolation: dict[str, NamespaceIsolation] = dict((policy.status.isolation or {}) if policy.status else {})
    namespaces = sorted(ns for ns, names in runtime.validations.items() if names and _governs(policy, ns))
    updates: dict[str, NamespaceIsolation] = {}
    delay: float | None = None
    selector = f"{layout.LABEL_COMPONENT}={builders.COMPONENT_PROBE},{builders.LABEL_POLICY}={builders.label_value(name)}"
    for namespace in namespaces:
        current = isolation.get(namespace)
        pods = await kube.list(path("pods", namespace), selector)
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        pending = None
        for pod in pods:
            if current is not None and current.probe == pod["metadata"]["name"]:
                continue
            result = outcome.probe_result(pod)
            if result is None:
                created = _parse_time(pod["metadata"].get("creationTimestamp"))
                limit = builders.PROBE_DEADLINE_SECONDS + 60
                if created is None or (now - created).total_seconds() <= limit:
                    pending = pod
                    continue
                # Never scheduled or never started: isolation is unproven, which must block runs too.
                phase = (pod.get("status") or {}).get("phase", "Pending")
                result = outcome.ProbeResult(False, f"the probe pod did not finish within {limit} s (phase {phase})")
            current = NamespaceIsolation(
                isolated=result.isolated, checked_at=now, message=result.message, probe=pod["metadata"]["name"]
            )
            updates[namespace] = current
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            if pod is not pending and (current is None or pod_name != current.probe):
                await kube.delete(path("pods", namespace, pod_name))
                await kube.delete(path("networkpolicies", namespace, pod_name))
        checked = current.checked_at if current and current.checked_at else None
        age = (now - checked).total_seconds() if checked else None
        # A failed probe is repeated sooner: the fix (a NetworkPolicy-enforcing CNI) should show quickly.
        due_after = interval if current is None or current.isolated else min(interval, 300)
        if pending is None and (age is None or age >= due_after):
            # Restart safety comes from looking for an unfinished probe first (above), not from the name.
            probe = builders.probe_name(name, int(now.timestamp()))
            await kube.create(path("networkpolicies", namespace), builders.probe_network_policy(policy, namespace, probe))
            await kube.create(
                path("pods", namespace),
                builders.probe_pod(policy, namespace, probe, config, config.probe_api_server or runtime.api_server),
            )
            pending = True  # type: ignore[assignment]
        wait = 5.0 if pending is not None else max(1.0, due_after - (age or 0))
        delay = wait if delay is None else min(delay, wait)

    if updates:
        isolation.update(updates)
        bad = sorted(ns for ns, item in isolation.items() if not item.isolated)
        if bad:
            cond = ("False", "NetworkReachable", "not isolated: " + ", ".join(f"{ns} ({isolation[ns].message})" for ns in bad))
        else:
            cond = ("True", "ProbeReachedNothing", "isolation probe reached nothing in " + ", ".join(sorted(isolation)))
        conditions = set_condition(policy.status.conditions if policy.status else None, "Isolated", *cond, now, raw["metadata"].get("generation"))
        body = {
            "isolation": {ns: _dump(item) for ns, item in updates.items()},
            "conditions": [_dump(c) for c in conditions],
            "observedGeneration": raw["metadata"].get("generation"),
        }
        await kube.patch(path("sandboxpolicies", None, name, "status"), {"status": body})
        runtime.policies = None  # the woken Validations must see the new isolation result
        for namespace, item in updates.items():
            runtime.exporter.record_isolation(namespace, name, item.isolated)
            message = f"namespace {namespace}: {item.message}"
            await post_event(runtime, raw, "Normal" if item.isolated else "Warning",
                             "NamespaceIsolated" if item.isolated else "NamespaceNotIsolated", message)
            runtime.wake_namespace(namespace)
    return delay
