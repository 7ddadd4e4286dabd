"""Run bookkeeping: names, schedule ticks, history, queue order, phase. Pure.

A run's name is derived from the Validation and the run number, so a restarted
operator recomputes the same name and finds the Job it may already have made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

from lightbox.api.validation import Phase, RunRecord, ValidationStatus

ACTIVE_PHASES = frozenset({"Queued", "Running"})
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
NAME_LIMIT = 63  # Job names end up in pod labels (job-name), which allow 63.
_EPSILON = timedelta(microseconds=1)


def run_name(validation: str, number: int) -> str:
    suffix = f"-r{number}"
    if len(validation) + len(suffix) <= NAME_LIMIT:
        return validation + suffix
    digest = hashlib.sha256(validation.encode()).hexdigest()[:8]
    keep = NAME_LIMIT - len(suffix) - len(digest) - 1
    return f"{validation[:keep].rstrip('-.')}-{digest}{suffix}"


def next_number(records: Iterable[RunRecord], job_numbers: Iterable[int] = ()) -> int:
    """One more than any run seen in status or among the Jobs (status may lag the Jobs)."""
    return max([0, *(r.number for r in records), *job_numbers]) + 1


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def next_tick(schedule: str, after: datetime) -> datetime:
    return _aware(croniter(schedule, _aware(after)).get_next(datetime))


def due_tick(schedule: str, since: datetime, now: datetime) -> datetime | None:
    """The latest tick in (since, now], or None. Missed older ticks collapse into
    this one: a monitoring run reflects the data now, catching up serves nobody."""
    since, now = _aware(since), _aware(now)
    first = next_tick(schedule, since)
    if first > now:
        return None
    latest = _aware(croniter(schedule, now + _EPSILON).get_prev(datetime))
    return latest if latest > since else first


def prune(records: list[RunRecord], history_limit: int) -> tuple[list[RunRecord], list[RunRecord]]:
    """(kept, dropped): the oldest finished runs beyond the limit go; active runs always stay."""
    ordered = sorted(records, key=lambda r: r.number)
    excess = len(ordered) - history_limit
    dropped: list[RunRecord] = []
    for record in ordered:
        if excess <= 0:
            break
        if record.phase in TERMINAL_PHASES:
            dropped.append(record)
            excess -= 1
    gone = {r.name for r in dropped}
    return [r for r in ordered if r.name not in gone], dropped


@dataclass(frozen=True, order=True)
class QueueEntry:
    """Sort key of a queued run: its arrival (schedule tick, else its Validation's creation), then the
    Validation's creation and name (timestamps have whole seconds), then the run number."""

    queued_at: datetime
    validation_created: str
    validation: str
    number: int
    gpus: int = 0


def queue_order(entries: Iterable[QueueEntry]) -> list[QueueEntry]:
    return sorted(entries)


@dataclass(frozen=True)
class Capacity:
    active_runs: int
    gpus_in_use: int
    max_runs: int
    max_gpus: int

    def admits(self, gpus: int) -> bool:
        return self.active_runs < self.max_runs and self.gpus_in_use + gpus <= self.max_gpus


def may_start(entry: QueueEntry, queued: Iterable[QueueEntry], capacity: Capacity, unseen_ahead: int = 0) -> bool:
    """FIFO per namespace: a run starts only if it fits *together with every run queued
    before it*, so room is reserved for those first and a large GPU run is not starved
    by a stream of small ones; when there is room for all, nobody waits for its turn.
    ``unseen_ahead`` counts earlier Validations whose runs are not queued yet (their first
    pass is still to come): each keeps a run slot; their GPUs are not known yet."""
    ahead = [e for e in queued if e < entry and (e.validation, e.number) != (entry.validation, entry.number)]
    runs_needed = len(ahead) + unseen_ahead + 1
    gpus_needed = sum(e.gpus for e in ahead) + entry.gpus
    return (
        capacity.active_runs + runs_needed <= capacity.max_runs
        and capacity.gpus_in_use + gpus_needed <= capacity.max_gpus
    )


def validation_phase(status: ValidationStatus, admitted: bool, scheduled: bool) -> Phase:
    """Phase shown in ``kubectl get validations``: what is happening now, else the last result."""
    runs = status.runs or []
    if any(r.phase == "Running" for r in runs):
        return "Running"
    if not admitted:
        return "Blocked"
    if any(r.phase == "Queued" for r in runs):
        return "Queued"
    if scheduled:
        return "Scheduled"
    finished = [r for r in runs if r.phase in TERMINAL_PHASES]
    if finished:
        return max(finished, key=lambda r: r.number).phase
    return "Pending"


def latest_finished(records: Iterable[RunRecord]) -> RunRecord | None:
    finished = [r for r in records if r.phase in TERMINAL_PHASES]
    return max(finished, key=lambda r: r.number) if finished else None
