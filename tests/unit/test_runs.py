"""Run names, schedule ticks, history pruning, queue order and the phase shown to users."""

from __future__ import annotations

from datetime import UTC, datetime

from lightbox.api.validation import RunRecord, ValidationStatus
from lightbox.operator import runs


def record(number, phase="Succeeded", name="v"):
    return RunRecord(name=runs.run_name(name, number), number=number, phase=phase)


def at(hour, minute=0, day=1):
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


# Digests below are the first 8 hex digits of SHA-256 of the name, taken with coreutils'
# sha256sum (printf '%s' NAME | sha256sum), not with the code under test.
def test_run_names_are_deterministic_and_fit_63():
    assert runs.run_name("chest-auc", 1) == "chest-auc-r1"
    assert runs.run_name("chest-auc", 12) == "chest-auc-r12"
    # 51 kept characters + "-" + 8 digest digits + "-r7" = 63.
    assert runs.run_name("x" * 120, 7) == "x" * 51 + "-13f05a0b-r7"
    assert runs.run_name("x" * 120, 100) == "x" * 49 + "-13f05a0b-r100"
    assert runs.run_name("x" * 121, 1) == "x" * 51 + "-79072a47-r1"


def test_run_name_limit_is_inclusive():
    assert runs.run_name("v" * 60, 1) == "v" * 60 + "-r1"  # exactly 63: kept whole
    assert runs.run_name("v" * 61, 1) == "v" * 51 + "-06229b08-r1"  # 64 would not fit


def test_shortened_name_does_not_end_the_kept_part_with_a_separator():
    # The cut falls just after the "-": a name part may not end in "-" or ".".
    name = "a" * 50 + "-" + "b" * 70
    assert runs.run_name(name, 7) == "a" * 50 + "-84b5d954-r7"


def test_next_number_uses_status_and_jobs():
    assert runs.next_number([]) == 1
    assert runs.next_number([record(1), record(2)]) == 3
    assert runs.next_number([record(2)], job_numbers=[5]) == 6


def test_due_tick_latest_missed_tick_only():
    hourly = "0 * * * *"
    assert runs.due_tick(hourly, at(1, 0), at(1, 30)) is None
    assert runs.due_tick(hourly, at(1, 0), at(2, 0)) == at(2, 0)
    # Missed ticks collapse into the latest one.
    assert runs.due_tick(hourly, at(1, 0), at(5, 10)) == at(5, 0)
    assert runs.due_tick("@daily", at(0, 0), at(23, 59)) is None
    assert runs.due_tick("@daily", at(0, 0), at(0, 0, day=2)) == at(0, 0, day=2)
    assert runs.next_tick("*/15 * * * *", at(1, 1)) == at(1, 15)


def test_due_tick_naive_times_are_utc():
    assert runs.due_tick("0 * * * *", datetime(2026, 1, 1, 1), datetime(2026, 1, 1, 2)) == at(2)


def test_prune_keeps_the_newest_finished_and_every_active_run():
    records = [record(1), record(2, "Failed"), record(3), record(4, "Running")]
    kept, dropped = runs.prune(records, 2)
    assert [r.number for r in dropped] == [1, 2]
    assert [r.number for r in kept] == [3, 4]
    kept, dropped = runs.prune([record(1, "Running"), record(2, "Queued")], 1)
    assert dropped == [] and len(kept) == 2
    kept, dropped = runs.prune(records, 10)
    assert dropped == [] and len(kept) == 4


def entry(minute, name, number=1, gpus=0, created="2026-01-01T00:00:00Z"):
    return runs.QueueEntry(at(0, minute), created, name, number, gpus)


def test_queue_order_is_creation_order():
    late = "2026-01-01T00:00:01Z"
    entries = [entry(5, "b"), entry(1, "c"), entry(1, "a", created=late), entry(1, "z")]
    # Same second: the older Validation first, then the name, so the order is total.
    ordered = [(e.validation, e.validation_created == late) for e in runs.queue_order(entries)]
    assert ordered == [("c", False), ("z", False), ("a", True), ("b", False)]


def test_may_start_only_with_room_for_everyone_queued_before():
    first, second = entry(1, "a", gpus=1), entry(2, "b", gpus=1)
    queue = [first, second]
    one_slot = runs.Capacity(active_runs=0, gpus_in_use=0, max_runs=1, max_gpus=2)
    assert runs.may_start(first, queue, one_slot)
    assert not runs.may_start(second, queue, one_slot)  # the slot is first's
    room = runs.Capacity(active_runs=0, gpus_in_use=0, max_runs=2, max_gpus=2)
    assert runs.may_start(second, queue, room)  # room for both: no need to wait its turn
    gpu_bound = runs.Capacity(active_runs=0, gpus_in_use=1, max_runs=5, max_gpus=2)
    assert runs.may_start(first, queue, gpu_bound)
    assert not runs.may_start(second, queue, gpu_bound)  # first's GPU is reserved
    big = entry(0, "big", gpus=2)
    assert not runs.may_start(first, [big, first], gpu_bound)  # a small run does not overtake a big one
    full = runs.Capacity(active_runs=2, gpus_in_use=0, max_runs=2, max_gpus=8)
    assert not runs.may_start(first, queue, full)
    no_gpus = runs.Capacity(active_runs=0, gpus_in_use=2, max_runs=5, max_gpus=2)
    assert not runs.may_start(first, queue, no_gpus)
    assert runs.may_start(entry(1, "cpu-only", gpus=0), [], no_gpus)


def test_validation_phase():
    phase = runs.validation_phase
    assert phase(ValidationStatus(), admitted=True, scheduled=False) == "Pending"
    assert phase(ValidationStatus(), admitted=False, scheduled=False) == "Blocked"
    assert phase(ValidationStatus(runs=[record(1, "Queued")]), True, False) == "Queued"
    assert phase(ValidationStatus(runs=[record(1, "Queued")]), False, False) == "Blocked"
    assert phase(ValidationStatus(runs=[record(1, "Running")]), False, False) == "Running"
    assert phase(ValidationStatus(runs=[record(1, "Failed"), record(2)]), True, False) == "Succeeded"
    assert phase(ValidationStatus(runs=[record(1), record(2, "Failed")]), True, False) == "Failed"
    assert phase(ValidationStatus(runs=[record(1)]), True, True) == "Scheduled"


def test_latest_finished():
    assert runs.latest_finished([record(1), record(2, "Failed"), record(3, "Running")]).number == 2
    assert runs.latest_finished([record(1, "Queued")]) is None


def test_validations_not_yet_seen_by_a_pass_keep_their_slot():
    third = entry(3, "third")
    one_slot = runs.Capacity(active_runs=0, gpus_in_use=0, max_runs=1, max_gpus=0)
    assert runs.may_start(third, [third], one_slot)
    assert not runs.may_start(third, [third], one_slot, unseen_ahead=2)  # first and second come first
    room = runs.Capacity(active_runs=0, gpus_in_use=0, max_runs=3, max_gpus=0)
    assert runs.may_start(third, [third], room, unseen_ahead=2)  # room for all three: no waiting
