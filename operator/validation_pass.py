"""One pass over a Validation: what it read from the cluster, and what it has decided so far.

The pass reads everything first (``load_pass``), then the steps in
``validations`` change ``records`` and collect ``events`` and ``finished``;
status is written once at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lightbox.api import Algorithm, AlgorithmApproval, Dataset, SandboxPolicy, Validation
from lightbox.api import run as layout
from lightbox.api.audit import Drift
from lightbox.api.run import Task
from lightbox.api.validation import RunRecord, ValidationStatus
from lightbox.operator import admission as admission_mod
from lightbox.operator import approvals as approvals_mod
from lightbox.operator import builders, outcome, runs
from lightbox.operator.conclude import conclude
from lightbox.operator.kube import path
from lightbox.operator.lookups import load_approvals, load_dependencies, owned_by, pods_by_job

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime

Event = tuple[str, str, str]  # (type, reason, message)


@dataclass
class ValidationPass:
    runtime: Runtime
    raw: dict[str, Any]
    validation: Validation
    now: datetime
    algorithm: Algorithm | None
    dataset: Dataset | None
    admission: admission_mod.Admission
    # The approvals that count towards the policy's requirement, recorded with each run.
    counted: list[AlgorithmApproval]
    # The run Jobs this Validation owns, by name, and the newest pod of each (only while needed).
    jobs: dict[str, dict[str, Any]]
    pods: dict[str, dict[str, Any]]
    status: ValidationStatus
    records: dict[str, RunRecord]
    events: list[Event] = field(default_factory=list)
    finished: list[RunRecord] = field(default_factory=list)
    drifts: dict[str, Drift | None] = field(default_factory=dict)
    started: bool = False

    @property
    def namespace(self) -> str:
        return str(self.raw["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.raw["metadata"]["name"])

    @property
    def generation(self) -> int | None:
        generation = self.raw["metadata"].get("generation")
        return int(generation) if generation is not None else None

    @property
    def created(self) -> str:
        """The Validation's creationTimestamp as the API server wrote it ("" when absent)."""
        return str(self.raw["metadata"].get("creationTimestamp") or "")

    @property
    def policy(self) -> SandboxPolicy | None:
        return self.admission.policy

    @property
    def task(self) -> Task | None:
        return self.algorithm.spec.task if self.algorithm else None

    @property
    def schedule(self) -> str | None:
        """The cron schedule when it has ticks; an out-of-range one blocks admission (InvalidSchedule) instead."""
        schedule = self.validation.spec.schedule
        return schedule if schedule and not admission_mod.check_schedule(self.validation) else None

    async def conclude(self, record: RunRecord, result: outcome.Outcome) -> None:
        """The run is over: its final record, committed to the audit trail, replaces the current one."""
        final = await conclude(
            self.runtime, self.validation, record, result, self.algorithm, self.dataset, self.policy, self.now,
            self.drifts, self.counted,
        )
        self.records[final.name] = final
        self.finished.append(final)


async def load_pass(runtime: Runtime, raw: dict[str, Any], validation: Validation, now: datetime) -> ValidationPass:
    namespace = str(raw["metadata"]["namespace"])
    status = validation.status or ValidationStatus()
    algorithm, dataset, policies = await load_dependencies(runtime, validation, namespace)
    approvals = await load_approvals(runtime, namespace, policies)
    admission = admission_mod.admit(validation, algorithm, dataset, policies, approvals)
    counted = (
        approvals_mod.tally(algorithm, approvals, admission.policy.spec.approvals).counted
        if algorithm is not None and admission.policy is not None
        else []
    )
    jobs, pods = await _owned_jobs_and_pods(runtime, raw, status)
    return ValidationPass(
        runtime=runtime, raw=raw, validation=validation, now=now, algorithm=algorithm, dataset=dataset,
        admission=admission, counted=counted, jobs=jobs, pods=pods, status=status,
        records={r.name: r for r in status.runs or []},
    )


async def _owned_jobs_and_pods(
    runtime: Runtime, raw: dict[str, Any], status: ValidationStatus
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    namespace, name, uid = raw["metadata"]["namespace"], raw["metadata"]["name"], raw["metadata"]["uid"]
    selector = (
        f"{layout.LABEL_COMPONENT}={builders.COMPONENT_RUN},{layout.LABEL_VALIDATION}={builders.label_value(name)}"
    )
    listed = await runtime.kube.list(path("jobs", namespace), selector)
    jobs = {j["metadata"]["name"]: j for j in listed if owned_by(j, uid)}
    known = {r.name: r for r in status.runs or []}
    # Pods matter only for runs still open; a finished Job whose record is final needs none.
    need_pods = any(not outcome.job_finished(j) for j in jobs.values()) or any(
        known.get(n) is None or known[n].phase in runs.ACTIVE_PHASES for n in jobs
    )
    pods = pods_by_job(await runtime.kube.list(path("pods", namespace), selector)) if need_pods else {}
    return jobs, pods
