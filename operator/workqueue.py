"""A de-duplicating work queue with delayed re-adds and per-key backoff (the controller-runtime pattern).

Watch events only say "look at this object again"; a key queued twice is
reconciled once, and a key re-added while it is being reconciled runs again
afterwards, so no event is lost and one object is never reconciled twice at once.

A key whose pass failed comes back after a delay that doubles with each failure
in a row, up to a cap, and starts again from the base after a success: a broken
object costs little, and a passing outage is retried soon.

Two lanes: keys woken because their object changed are handed out before
background work (the start-up listing, resyncs and retries that come back by
timer, fan-outs to a whole namespace). With one first-in-first-out lane a change
waited behind every key queued before it: with 5,000 Validations watched, a
patched Validation waited over two minutes behind the start-up backlog and the
periodic resyncs (docs/performance.md). A background key woken by a change moves
to the front lane; a background lane can wait as long as changes keep coming,
which is the trade made on purpose (controller-runtime's priority queue makes the
same one for its initial list).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

BASE_DELAY = 1.0
MAX_DELAY = 60.0
CHANGED, BACKGROUND = 0, 1  # lanes, served in this order


class WorkQueue(Generic[K]):
    def __init__(
        self,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < base_delay <= max_delay:
            raise ValueError(f"backoff needs 0 < base_delay <= max_delay, got {base_delay} and {max_delay}")
        self.base_delay, self.max_delay = base_delay, max_delay
        self._clock = clock
        # Each lane in arrival order; a key promoted to the front lane leaves a stale entry
        # behind, skipped when reached (``_queued`` says which lane a queued key is in now).
        self._lanes: tuple[deque[K], deque[K]] = (deque(), deque())
        self._queued: dict[K, int] = {}
        self._available = asyncio.Semaphore(0)  # one per queued key
        self._processing: set[K] = set()
        self._dirty: dict[K, int] = {}  # re-added while processing -> its lane
        # key -> (when it is due by our clock, the loop's timer that adds it then)
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}

    def add(self, key: K, delay: float = 0.0, *, background: bool = False) -> None:
        """Queue ``key`` now, or after ``delay`` seconds (then in the background lane); of two delayed
        adds the earlier wins. ``background``: not woken by a change of its object."""
        if delay > 0:
            self._add_later(key, delay)
            return
        lane = BACKGROUND if background else CHANGED
        if key in self._processing:
            self._dirty[key] = min(lane, self._dirty.get(key, lane))
        elif key not in self._queued:
            self._queued[key] = lane
            self._lanes[lane].append(key)
            self._available.release()
        elif lane < self._queued[key]:
            self._queued[key] = lane
            self._lanes[lane].append(key)

    def _add_later(self, key: K, delay: float) -> None:
        when = self._clock() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        timer = asyncio.get_running_loop().call_later(delay, self._fire, key)
        self._timers[key] = (when, timer)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key, background=True)

    def due(self, key: K) -> float | None:
        """When (by the queue's clock) a delayed add of ``key`` is due; None when none is pending."""
        pending = self._timers.get(key)
        return pending[0] if pending is not None else None

    async def get(self) -> K:
        await self._available.acquire()
        for lane, keys in enumerate(self._lanes):
            while keys:
                key = keys.popleft()
                if self._queued.get(key) == lane:
                    del self._queued[key]
                    self._processing.add(key)
                    return key
        raise AssertionError("a queued key is in no lane")

    def done(self, key: K) -> None:
        self._processing.discard(key)
        lane = self._dirty.pop(key, None)
        if lane is not None:
            self.add(key, background=lane == BACKGROUND)

    def failed(self, key: K) -> tuple[int, float]:
        """Count a failed pass of ``key``: (failures in a row, the delay before its next try)."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        # min() before the power would overflow: 2**1100 is not a float.
        exponent = min(failures - 1, 64)
        return failures, min(self.base_delay * 2.0**exponent, self.max_delay)

    def succeeded(self, key: K) -> None:
        """A pass of ``key`` went through: its next failure starts the backoff again."""
        self._failures.pop(key, None)

    def close(self) -> None:
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def __len__(self) -> int:
        return len(self._queued)
