"""The run scheduler: run slots and GPUs from the Jobs, FIFO order with room reserved for earlier runs,
Validations not seen yet keeping their place, and which Validations to wake.

Every expectation is counted by hand in the comment next to it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import factories

from lightbox.operator.runs import QueueEntry
from lightbox.operator.scheduler import WAKE_LIMIT, RunScheduler, job_gpus

NS = "region"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(
    name: str, vendor_gpus: int = 0, init_gpus: int = 0, finished: str | None = None, deleting: bool = False
) -> dict[str, Any]:
    def container(cname: str, gpus: int) -> dict[str, Any]:
        limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
        return {"name": cname, "resources": {"limits": {"cpu": "1", **limits}}}

    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    body: dict[str, Any] = {
        "metadata": meta,
        "spec": {"template": {"spec": {
            "initContainers": [container("stage", 0), container("vendor", init_gpus)],
            "containers": [container("score", vendor_gpus)],
        }}},
    }
    if finished:
        body["status"] = {"conditions": [{"type": finished, "status": "True"}]}
    return body


def entry(validation: str, minutes: int, gpus: int = 0, number: int = 1) -> QueueEntry:
    return QueueEntry(
        queued_at=T0 + timedelta(minutes=minutes),
        validation_created=(T0 + timedelta(minutes=minutes)).isoformat(),
        validation=validation,
        number=number,
        gpus=gpus,
    )


def scheduler_with(jobs: list[dict[str, Any]]) -> RunScheduler:
    scheduler = RunScheduler(unsynced=set())
    scheduler.load_jobs(NS, jobs, now=0.0)
    return scheduler


def test_a_job_holds_its_largest_container_gpu_limit():
    # Init containers run one at a time and before the main ones: the most any one asks, not the sum.
    assert job_gpus(job("a", vendor_gpus=1, init_gpus=3)) == 3
    assert job_gpus(job("b", vendor_gpus=2)) == 2
    assert job_gpus(job("c")) == 0


def test_capacity_counts_only_unfinished_jobs_and_their_gpus():
    jobs = [
        job("running-2gpu", init_gpus=2),
        job("running-3gpu", vendor_gpus=1, init_gpus=3),
        job("done", init_gpus=4, finished="Complete"),
        job("failed", init_gpus=4, finished="Failed"),
        job("deleting", init_gpus=4, deleting=True),
    ]
    capacity = scheduler_with(jobs).capacity(NS, factories.policy(maxConcurrentRuns=4, maxGpusInUse=8))
    # Two Jobs hold slots; 2 + 3 GPUs.
    assert (capacity.active_runs, capacity.gpus_in_use, capacity.max_runs, capacity.max_gpus) == (2, 5, 4, 8)


def test_without_a_policy_one_run_and_no_gpu():
    capacity = scheduler_with([]).capacity(NS, None)
    assert (capacity.max_runs, capacity.max_gpus) == (1, 0)


def test_runs_start_in_queue_order_within_run_slots_and_gpus():
    # One run active holding 2 GPUs; limits 3 runs, 4 GPUs.
    scheduler = scheduler_with([job("busy", init_gpus=2)])
    capacity = scheduler.capacity(NS, factories.policy(maxConcurrentRuns=3, maxGpusInUse=4))
    first, big, late = entry("first", 0), entry("big", 1, gpus=4), entry("late", 2)
    for e in (late, big, first):  # arrival order in the dict must not matter
        scheduler.enqueue(NS, e)
    # first: nothing ahead: 1+1 <= 3 runs, 2+0 <= 4 GPUs: starts.
    assert scheduler.may_start(NS, first, capacity)
    # big: first ahead: 1+2 <= 3 runs, but 2+0+4 = 6 > 4 GPUs: waits.
    assert not scheduler.may_start(NS, big, capacity)
    # late: first and big ahead: 1+3 = 4 > 3 runs: waits (room is kept for big, which is not starved).
    assert not scheduler.may_start(NS, late, capacity)


def test_a_small_run_does_not_overtake_a_waiting_gpu_run():
    # 2 of 4 GPUs in use, plenty of run slots: the 4-GPU run waits, and the 1-GPU run behind it too
    # (2 + 4 + 1 = 7 > 4), so the big one gets the GPUs when they free up.
    scheduler = scheduler_with([job("busy", init_gpus=2)])
    capacity = scheduler.capacity(NS, factories.policy(maxConcurrentRuns=10, maxGpusInUse=4))
    big, small = entry("big", 0, gpus=4), entry("small", 1, gpus=1)
    scheduler.enqueue(NS, big)
    scheduler.enqueue(NS, small)
    assert not scheduler.may_start(NS, big, capacity)
    assert not scheduler.may_start(NS, small, capacity)
    # The busy Job finishes (watch event): 0 in use; big fits (0+4 <= 4), small still waits (4+1 > 4).
    scheduler.observe_job(NS, job("busy", init_gpus=2, finished="Complete"), deleted=False)
    capacity = scheduler.capacity(NS, factories.policy(maxConcurrentRuns=10, maxGpusInUse=4))
    assert capacity.gpus_in_use == 0
    assert scheduler.may_start(NS, big, capacity)
    assert not scheduler.may_start(NS, small, capacity)
    # big started: it leaves the queue and its Job holds 4; small: 4+1 > 4 still.
    scheduler.dequeue(NS, "big", 1)
    scheduler.observe_job(NS, job("big-r1", init_gpus=4), deleted=False)
    capacity = scheduler.capacity(NS, factories.policy(maxConcurrentRuns=10, maxGpusInUse=4))
    assert (capacity.active_runs, capacity.gpus_in_use) == (1, 4)
    assert not scheduler.may_start(NS, small, capacity)


def test_an_earlier_validation_not_through_its_first_pass_keeps_its_slot():
    # One slot. "early" was created before "late" but has not had a pass: its run is not queued yet.
    scheduler = scheduler_with([])
    capacity = scheduler.capacity(NS, factories.policy(maxConcurrentRuns=1))
    late = entry("late", 5)
    scheduler.arrived(NS, "early", entry("early", 0).validation_created)
    scheduler.arrived(NS, "late", late.validation_created)
    scheduler.enqueue(NS, late)
    assert scheduler.earlier_unreconciled(NS, "late", late.validation_created) == 1
    assert not scheduler.may_start(NS, late, capacity)
    # early's pass ends without a run (say it is suspended): late may go. One other still pending
    # (late itself), so one head is woken.
    assert scheduler.end_pass(NS, "early", last_unsynced=False) == [(NS, 1)]
    assert scheduler.may_start(NS, late, capacity)
    # late's own pass ends: nothing pending in the namespace, wake up to the limit.
    assert scheduler.end_pass(NS, "late", last_unsynced=False) == [(NS, WAKE_LIMIT)]


def test_no_run_starts_until_every_validation_present_at_start_has_had_a_pass():
    scheduler = RunScheduler()
    assert not scheduler.synced  # the watch's listing has not arrived
    scheduler.start_sync({"a": [("v1", "2026-01-01T00:00:00Z")], "b": [("v2", "2026-01-01T00:00:01Z")]})
    scheduler.enqueue("c", entry("queued-elsewhere", 0))
    assert not scheduler.synced
    assert scheduler.begin_pass("a", "v1") is False  # v2 still to come
    scheduler.end_pass("a", "v1", last_unsynced=False)
    assert not scheduler.synced
    assert scheduler.begin_pass("b", "v2") is True  # the last one
    assert scheduler.synced
    # b's own queue head, then every namespace with a queue: only c has one.
    assert scheduler.end_pass("b", "v2", last_unsynced=True) == [("b", WAKE_LIMIT), ("c", WAKE_LIMIT)]


def test_heads_are_the_first_queued_in_order_and_at_most_the_limit():
    scheduler = scheduler_with([])
    for minute in reversed(range(WAKE_LIMIT + 4)):
        scheduler.enqueue(NS, entry(f"v{minute:02d}", minute))
    assert scheduler.heads(NS, 2) == ["v00", "v01"]
    assert scheduler.heads(NS, 0) == []
    assert scheduler.heads(NS, -3) == []
    assert scheduler.heads(NS, 100) == [f"v{m:02d}" for m in range(WAKE_LIMIT)]
    assert scheduler.heads("elsewhere", 5) == []


def test_keep_and_forget_drop_only_that_validations_runs():
    scheduler = scheduler_with([])
    for number in (1, 2, 3):
        scheduler.enqueue(NS, entry("a", 0, number=number))
    scheduler.enqueue(NS, entry("b", 1))
    scheduler.keep(NS, "a", [2])
    assert sorted(scheduler.queued[NS]) == [("a", 2), ("b", 1)]
    scheduler.forget(NS, "a")
    assert sorted(scheduler.queued[NS]) == [("b", 1)]
    assert scheduler.queued_count(NS) == 1


def test_job_watch_keeps_the_slots_current_and_a_resync_lists_again():
    scheduler = RunScheduler()
    # Not loaded yet: a watch event is ignored (the first LIST will include the Job).
    scheduler.observe_job(NS, job("a", init_gpus=1), deleted=False)
    assert scheduler.needs_jobs(NS, now=0.0, resync_seconds=60)
    scheduler.load_jobs(NS, [job("a", init_gpus=1)], now=0.0)
    assert not scheduler.needs_jobs(NS, now=30.0, resync_seconds=60)
    scheduler.observe_job(NS, job("b", init_gpus=2), deleted=False)
    scheduler.observe_job(NS, job("a", init_gpus=1), deleted=True)
    capacity = scheduler.capacity(NS, factories.policy())
    assert (capacity.active_runs, capacity.gpus_in_use) == (1, 2)
    # After the resync interval the copy is dropped and listed again: a missed event cannot hold a slot.
    assert scheduler.needs_jobs(NS, now=61.0, resync_seconds=60)
