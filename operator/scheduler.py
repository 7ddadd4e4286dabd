"""The run scheduler: which queued run may start, per namespace (queue order, run slots, GPUs).

One object holds what the start decision needs and that the cluster does not
hand over in one read: the runs waiting for a slot, the unfinished run Jobs and
their GPUs, and which Validations have not had their first pass yet (until they
have, their runs' places in the queue are unknown). Everything here is pure
bookkeeping; the reconcilers do the I/O and feed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightbox.api.policy import SandboxPolicy
from lightbox.operator import builders, outcome, runs

# Never wake more than this many Validations at once: each woken one costs a pass.
WAKE_LIMIT = 16


def job_gpus(job: dict[str, Any]) -> int:
    """GPUs a Job holds while it runs: the largest limit of one container (init containers run one at a time)."""
    spec = job["spec"]["template"]["spec"]
    total = 0
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        limit = ((container.get("resources") or {}).get("limits") or {}).get(builders.GPU_RESOURCE)
        if limit:
            total = max(total, int(limit))
    return total


def unfinished_jobs(jobs: Iterable[dict[str, Any]]) -> dict[str, int]:
    """{Job name: GPUs} of the run Jobs that still hold a slot."""
    return {
        j["metadata"]["name"]: job_gpus(j)
        for j in jobs
        if not outcome.job_finished(j) and not j["metadata"].get("deletionTimestamp")
    }


@dataclass
class RunScheduler:
    # namespace -> {(validation, number): entry}: runs waiting for a slot, for FIFO order.
    queued: dict[str, dict[tuple[str, int], runs.QueueEntry]] = field(default_factory=dict)
    # Validations present at start-up that have not been reconciled yet: until they
    # have, the queue order is unknown, so no new run starts. None until the watch's
    # initial listing arrived.
    unsynced: set[tuple[str, str]] | None = None
    # namespace -> {name: creationTimestamp} of Validations the watch delivered that have not
    # finished a pass yet: a run of a Validation created after them must not jump ahead.
    unreconciled: dict[str, dict[str, str]] = field(default_factory=dict)
    # namespace -> {Job name: GPUs} of unfinished run Jobs. Filled by one LIST, then
    # kept current by our own creations and the Job watch, so a start decision under
    # the namespace lock costs no LIST (which grows with the number of Jobs).
    active_jobs: dict[str, dict[str, int]] = field(default_factory=dict)
    active_jobs_loaded: dict[str, float] = field(default_factory=dict)

    # -- what the watch saw ------------------------------------------------------

    def start_sync(self, listing: Mapping[str, Iterable[tuple[str, str]]]) -> None:
        """The watch's initial listing, namespace -> (name, creationTimestamp): all of them must pass first."""
        self.unsynced = {(ns, name) for ns, store in listing.items() for name, _ in store}
        for ns, store in listing.items():
            self.unreconciled.setdefault(ns, {}).update(dict(store))

    def arrived(self, namespace: str, name: str, created: str) -> None:
        """A Validation the watch delivered for the first time."""
        self.unreconciled.setdefault(namespace, {})[name] = created

    @property
    def synced(self) -> bool:
        return self.unsynced is not None and not self.unsynced

    def earlier_unreconciled(self, namespace: str, name: str, created: str) -> int:
        """Validations created before this one (ties by name, as the queue orders) not yet through a pass."""
        mine = (created, name)
        return sum((when, other) < mine for other, when in self.unreconciled.get(namespace, {}).items())

    def begin_pass(self, namespace: str, name: str) -> bool:
        """A pass of this Validation starts; True when it is the last one the start-up waits for."""
        if self.unsynced is None:
            return False
        last = self.unsynced == {(namespace, name)}
        self.unsynced.discard((namespace, name))
        return last

    def end_pass(self, namespace: str, name: str, last_unsynced: bool) -> list[tuple[str, int]]:
        """(namespace, how many queue heads to wake) now that this Validation's pass is through."""
        wake: list[tuple[str, int]] = []
        pending = self.unreconciled.get(namespace)
        if pending is not None and name in pending:
            del pending[name]
            # The head of the queue may have been waiting for this one's first pass.
            wake.append((namespace, 1 if pending else WAKE_LIMIT))
        if last_unsynced:
            # The queue order is known now: the runs that waited for it may start.
            wake.extend((queued_namespace, WAKE_LIMIT) for queued_namespace in list(self.queued))
        return wake

    # -- the queue ---------------------------------------------------------------

    def heads(self, namespace: str, count: int) -> list[str]:
        """Validations of the first ``count`` queued runs in the namespace (at most WAKE_LIMIT)."""
        if count <= 0:
            return []
        entries = runs.queue_order(self.queued.get(namespace, {}).values())[: min(count, WAKE_LIMIT)]
        return [entry.validation for entry in entries]

    def forget(self, namespace: str, name: str) -> None:
        """The Validation is gone: its queued runs leave the queue."""
        self.keep(namespace, name, ())

    def keep(self, namespace: str, name: str, numbers: Iterable[int]) -> None:
        """Of this Validation's queued runs keep only these numbers (the others left its status)."""
        wanted = set(numbers)
        here = self.queued.get(namespace, {})
        for key in [k for k in here if k[0] == name and k[1] not in wanted]:
            here.pop(key, None)

    def enqueue(self, namespace: str, entry: runs.QueueEntry) -> None:
        self.queued.setdefault(namespace, {})[(entry.validation, entry.number)] = entry

    def dequeue(self, namespace: str, name: str, number: int) -> None:
        self.queued.get(namespace, {}).pop((name, number), None)

    def queued_count(self, namespace: str) -> int:
        return len(self.queued.get(namespace, {}))

    def may_start(self, namespace: str, entry: runs.QueueEntry, capacity: runs.Capacity) -> bool:
        """FIFO with room reserved for the runs queued earlier and for the earlier Validations not seen yet."""
        unseen = self.earlier_unreconciled(namespace, entry.validation, entry.validation_created)
        return runs.may_start(entry, self.queued.get(namespace, {}).values(), capacity, unseen_ahead=unseen)

    # -- run slots -----------------------------------------------------------------

    def needs_jobs(self, namespace: str, now: float, resync_seconds: float) -> bool:
        """True when the namespace's unfinished Jobs must be listed (never, or not for a resync interval:
        a missed watch event cannot hold a slot forever)."""
        if now - self.active_jobs_loaded.get(namespace, -1e9) > resync_seconds:
            self.active_jobs.pop(namespace, None)
        return namespace not in self.active_jobs

    def load_jobs(self, namespace: str, jobs: Iterable[dict[str, Any]], now: float) -> None:
        self.active_jobs_loaded[namespace] = now
        self.active_jobs[namespace] = unfinished_jobs(jobs)

    def observe_job(self, namespace: str, job: dict[str, Any], deleted: bool) -> None:
        jobs = self.active_jobs.get(namespace)
        if jobs is None:
            return  # not loaded yet: the first LIST will include it
        name = job["metadata"]["name"]
        if deleted or outcome.job_finished(job) or job["metadata"].get("deletionTimestamp"):
            jobs.pop(name, None)
        else:
            jobs[name] = job_gpus(job)

    def capacity(self, namespace: str, policy: SandboxPolicy | None) -> runs.Capacity:
        active = self.active_jobs.get(namespace, {})
        spec = policy.spec if policy else None
        return runs.Capacity(
            active_runs=len(active),
            gpus_in_use=sum(active.values()),
            max_runs=spec.max_concurrent_runs if spec else 1,
            max_gpus=spec.max_gpus_in_use if spec else 0,
        )
