"""Leader election (operator/leader.py) in virtual time: who may act, and when.

Two or three electors share an in-memory Lease that behaves as the API server's
does for this object (a resourceVersion per write; a write with a stale one is a
409 Conflict; a create of an existing one too). Each elector ticks every ``retry``
seconds of a virtual clock, so the bounds checked are the algorithm's, whatever
the machine's load. The expected bounds are client-go's documented contract for
its defaults (15 s lease, 10 s renew deadline, 2 s retry), not read from the code.
"""

from __future__ import annotations

import asyncio
import heapq
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from lightbox.operator.leader import (
    LeaderElector,
    LeaseConflict,
    LeaseRecord,
    LeaseSettings,
    Lost,
    Started,
    claimed_spec,
)

DURATION, DEADLINE, RETRY = 15.0, 10.0, 2.0


@dataclass
class MemoryLease:
    """One Lease object with the API server's optimistic concurrency."""

    obj: dict[str, Any] | None = None
    version: int = 0
    writes: list[tuple[float, str | None]] = field(default_factory=list)
    now: float = 0.0

    def _write(self, spec: dict[str, Any]) -> LeaseRecord:
        self.version += 1
        self.obj = {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(spec)}
        self.writes.append((self.now, spec.get("holderIdentity")))
        return LeaseRecord.from_object(self.obj)


@dataclass
class Store:
    """One replica's view of the shared Lease; ``cut`` makes its requests fail like a partition."""

    lease: MemoryLease
    cut: bool = False

    def _check(self) -> None:
        if self.cut:
            raise ConnectionError("API server unreachable")

    async def read(self) -> LeaseRecord | None:
        self._check()
        seen = None if self.lease.obj is None else LeaseRecord.from_object(self.lease.obj)
        await asyncio.sleep(0)  # the answer's way back: replicas stepping together interleave here
        return seen

    async def create(self, spec: dict[str, Any]) -> LeaseRecord:
        self._check()
        if self.lease.obj is not None:
            raise LeaseConflict("exists")
        return self.lease._write(spec)

    async def update(self, spec: dict[str, Any], version: str) -> LeaseRecord:
        self._check()
        if self.lease.obj is None or version != str(self.lease.version):
            raise LeaseConflict("stale resourceVersion")
        return self.lease._write(spec)


class Sim:
    """Discrete-event loop: each replica ticks at its phase, then every RETRY seconds."""

    def __init__(self, lease: MemoryLease | None = None):
        self.now = 0.0
        self.lease = lease or MemoryLease()
        self.replicas: dict[str, tuple[LeaderElector, Store]] = {}
        self.log: list[tuple[float, str, str]] = []  # (time, replica, "started" | "lost")
        self.frozen: dict[str, tuple[float, float]] = {}  # replica -> [from, until): no ticks
        self._heap: list[tuple[float, str]] = []

    def add(self, name: str, phase: float) -> LeaderElector:
        store = Store(self.lease)
        settings = LeaseSettings(namespace="ns", identity=name, duration=DURATION, renew_deadline=DEADLINE, retry=RETRY)
        # Every replica's wall clock stands still: renewals write the same renewTime again, so a
        # standby has only the resourceVersion to see that the holder is alive.
        elector = LeaderElector(settings, store, clock=lambda: self.now, wall=lambda: datetime(2026, 1, 1, tzinfo=UTC))
        self.replicas[name] = (elector, store)
        heapq.heappush(self._heap, (phase, name))
        return elector

    def run_until(self, end: float) -> None:
        while self._heap and self._heap[0][0] <= end:
            self.now, name = heapq.heappop(self._heap)
            self.lease.now = self.now
            start, until = self.frozen.get(name, (float("inf"), float("inf")))
            if start <= self.now < until:
                heapq.heappush(self._heap, (until, name))  # a frozen process resumes where it stopped
                continue
            elector, _ = self.replicas[name]
            step = asyncio.run(elector.tick())
            if isinstance(step, Started):
                self.log.append((self.now, name, "started"))
            elif isinstance(step, Lost):
                self.log.append((self.now, name, "lost"))
                continue  # on_lost ends the process: no more ticks
            heapq.heappush(self._heap, (self.now + RETRY, name))

    def kill(self, name: str) -> None:
        self._heap = [(t, n) for t, n in self._heap if n != name]
        heapq.heapify(self._heap)

    def when(self, name: str, what: str) -> float:
        (moment,) = [t for t, n, w in self.log if n == name and w == what]
        return moment

    def leaders_at(self, moment: float) -> set[str]:
        """Replicas between their Started and their Lost (or a kill) at ``moment``, by the log."""
        out = set()
        for name in self.replicas:
            started = [t for t, n, w in self.log if n == name and w == "started" and t <= moment]
            lost = [t for t, n, w in self.log if n == name and w == "lost" and t <= moment]
            if started and not lost:
                out.add(name)
        return out


def last_renewal(sim: Sim, name: str, before: float) -> float:
    return max(t for t, holder in sim.lease.writes if holder == name and t < before)


def test_a_standby_takes_over_a_killed_holder_within_a_lease_duration_and_one_retry():
    sim = Sim()
    sim.add("a", 0.0)
    sim.add("b", 0.7)
    sim.run_until(5.5)
    assert sim.log == [(0.0, "a", "started")]
    sim.kill("a")  # SIGKILL: no release, no more renewals
    sim.run_until(60)
    taken = sim.when("b", "started")
    renewed = last_renewal(sim, "a", 5.5)
    # Not before the holder's record has stood unchanged for a lease duration (as b saw it) ...
    assert taken >= renewed + DURATION
    # ... and at most one retry period after that: within the 30 s the design asks for.
    assert taken <= renewed + DURATION + RETRY
    assert taken - 5.5 < 30


def test_a_partitioned_holder_stops_acting_before_any_standby_starts():
    sim = Sim()
    sim.add("a", 0.0)
    sim.add("b", 0.7)
    sim.add("c", 1.3)
    sim.run_until(5.5)
    sim.replicas["a"][1].cut = True  # a still runs, but its requests fail
    sim.run_until(60)
    lost, taken = sim.when("a", "lost"), min(t for t, n, w in sim.log if w == "started" and n != "a")
    assert lost < taken
    assert lost <= last_renewal(sim, "a", 5.5) + DEADLINE + RETRY
    # never two leaders at once, at any event
    assert all(len(sim.leaders_at(t)) <= 1 for t, _, _ in sim.log)
    assert len([1 for _, n, w in sim.log if w == "started" and n != "a"]) == 1


def test_a_frozen_holder_that_wakes_after_the_takeover_steps_down_at_once():
    sim = Sim()
    a = sim.add("a", 0.0)
    sim.add("b", 0.7)
    sim.run_until(5.5)
    sim.frozen["a"] = (5.5, 40.0)  # a stopped process (SIGSTOP, a long pause), resumed at 40 s
    sim.run_until(39.9)
    assert sim.when("b", "started") < 40
    sim.now = 40.0
    # Before its first step after the pause the holder already knows it may not act.
    assert a.leading and not a.holds()
    sim.run_until(40.0)
    assert sim.when("a", "lost") == 40.0
    assert sim.leaders_at(40.0) == {"b"}


def test_the_renew_time_written_by_another_clock_is_not_trusted():
    # A record renewed, by its own wall clock, in 1970: a skewed node. Only the local
    # observation counts, so the standby still waits a whole lease duration.
    stale = MemoryLease()
    stale._write({"holderIdentity": "old", "leaseDurationSeconds": 15, "renewTime": "1970-01-01T00:00:00.000000Z",
                  "acquireTime": "1970-01-01T00:00:00.000000Z", "leaseTransitions": 3})
    sim = Sim(stale)
    sim.add("b", 100.0)
    sim.run_until(200)
    assert sim.when("b", "started") == 100.0 + 16.0  # first tick after 115: 100 + 8 * RETRY


def test_two_standbys_racing_for_a_free_lease_elect_one():
    sim = Sim()
    a, b = sim.add("a", 0.0), sim.add("b", 0.0)

    async def both() -> list[object]:
        return list(await asyncio.gather(a.tick(), b.tick()))

    # Both read the free Lease before either writes; the second write carries a stale
    # resourceVersion (or creates an existing object) and is refused.
    steps = asyncio.run(both())
    assert sorted(type(s).__name__ for s in steps) == ["NoneType", "Started"]
    assert [a.leading, b.leading].count(True) == 1
    assert len(sim.lease.writes) == 1


def test_a_released_lease_is_taken_at_the_next_tick():
    sim = Sim()
    a = sim.add("a", 0.0)
    sim.add("b", 0.7)
    sim.run_until(5.5)
    asyncio.run(a.release())
    sim.kill("a")
    sim.run_until(30)
    assert sim.when("b", "started") == 6.7


def test_transitions_count_changes_of_holder_and_renewals_keep_the_acquire_time():
    settings = LeaseSettings(namespace="ns", identity="b")
    wall = datetime(2026, 12, 1, 1, 2, 3, 456789, tzinfo=UTC)
    first = claimed_spec(None, settings, wall)
    assert first == {"holderIdentity": "b", "leaseDurationSeconds": 15, "acquireTime": "2026-12-01T01:02:03.456789Z",
                     "renewTime": "2026-12-01T01:02:03.456789Z", "leaseTransitions": 0}
    held_by_a = LeaseRecord(holder="a", duration=15, transitions=4, acquired="2026-11-30T00:00:00.000000Z",
                            renewed="2026-11-30T00:00:10.000000Z", version="9")
    taken = claimed_spec(held_by_a, settings, wall)
    assert (taken["leaseTransitions"], taken["acquireTime"]) == (5, "2026-12-01T01:02:03.456789Z")
    ours = LeaseRecord(holder="b", duration=15, transitions=5, acquired="2026-12-01T00:00:00.000000Z",
                       renewed="2026-12-01T00:59:00.000000Z", version="10")
    renewed = claimed_spec(ours, settings, wall)
    assert (renewed["leaseTransitions"], renewed["acquireTime"], renewed["renewTime"]) == (
        5, "2026-12-01T00:00:00.000000Z", "2026-12-01T01:02:03.456789Z")


@pytest.mark.parametrize(("duration", "deadline", "retry"), [(15, 15, 2), (10, 15, 2), (15, 10, 10), (15, 10, 0)])
def test_settings_refuse_a_deadline_that_would_let_two_replicas_act(duration, deadline, retry):
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        LeaseSettings(namespace="ns", identity="a", duration=duration, renew_deadline=deadline, retry=retry)


def test_settings_need_a_namespace_and_an_identity():
    with pytest.raises(ValueError, match="namespace and this replica's identity"):
        LeaseSettings(namespace="", identity="a")


def test_run_starts_once_then_reports_the_loss_when_renewals_fail():
    """The real loop (real sleeps, short durations): on_started once, then on_lost with the reason."""
    lease = MemoryLease()
    store = Store(lease)
    settings = LeaseSettings(namespace="ns", identity="a", duration=0.3, renew_deadline=0.2, retry=0.02)
    elector = LeaderElector(settings, store)
    events: list[str] = []

    async def started() -> None:
        events.append("started")
        store.cut = True  # from now on every renewal fails

    async def scenario() -> None:
        lost = asyncio.Event()

        def on_lost(reason: str) -> None:
            events.append(reason)
            lost.set()

        task = asyncio.create_task(elector.run(started, on_lost))
        await asyncio.wait_for(lost.wait(), 30)  # a bound on a hang, not a measurement
        await task

    asyncio.run(scenario())
    assert events == ["started", "the lease was not renewed for 0.2 s"]
    assert not elector.leading and not elector.holds()
