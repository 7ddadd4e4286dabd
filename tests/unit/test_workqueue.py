"""The work queue: de-duplication, delayed adds, per-key exponential backoff with a cap and its reset,
and the worker's log after repeated failures (one traceback, then one line per retry).

Expected delays are counted by hand: base 1 s doubling, 1 2 4 8 16 32, then the cap.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from lightbox.operator import reconcile
from lightbox.operator.config import OperatorConfig
from lightbox.operator.exporter import Exporter
from lightbox.operator.keys import AlgorithmKey, DatasetKey, PolicyKey, ValidationKey
from lightbox.operator.runtime import Runtime
from lightbox.operator.workqueue import WorkQueue


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_backoff_doubles_per_failure_up_to_the_cap():
    queue: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=60.0, clock=Clock())
    delays = [queue.failed("a")[1] for _ in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_backoff_counts_failures_in_a_row_and_survives_very_many():
    queue: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=10.0)
    counts = [queue.failed("a")[0] for _ in range(3)]
    assert counts == [1, 2, 3]
    for _ in range(5000):  # 2**5000 is no float: the cap must hold without overflow
        failures, delay = queue.failed("a")
    assert (failures, delay) == (5003, 10.0)


def test_a_success_resets_the_backoff_of_that_key_only():
    queue: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=60.0)
    assert [queue.failed("a")[1] for _ in range(3)] == [1.0, 2.0, 4.0]
    assert [queue.failed("b")[1] for _ in range(2)] == [1.0, 2.0]
    queue.succeeded("a")
    assert queue.failed("a") == (1, 1.0)
    assert queue.failed("b") == (3, 4.0)


@pytest.mark.parametrize(("base", "cap"), [(0.0, 10.0), (-1.0, 10.0), (5.0, 1.0)])
def test_a_backoff_that_cannot_work_is_refused(base, cap):
    with pytest.raises(ValueError, match="base_delay"):
        WorkQueue(base_delay=base, max_delay=cap)


def test_a_retry_is_due_after_its_backoff_by_the_injected_clock():
    clock = Clock(1000.0)

    async def scenario() -> list[float | None]:
        queue: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=4.0, clock=clock)
        seen = []
        for _ in range(4):
            _, delay = queue.failed("a")
            queue.add("a", delay)
            seen.append(queue.due("a"))
            queue.close()  # the next retry is scheduled afresh, as after the key ran
            clock.now += 100.0
        return seen

    # 1000+1, 1100+2, 1200+4, 1300+4 (capped)
    assert run(scenario()) == [1001.0, 1102.0, 1204.0, 1304.0]


def test_of_two_delayed_adds_the_earlier_wins():
    clock = Clock(50.0)

    async def scenario() -> list[float | None]:
        queue: WorkQueue[str] = WorkQueue(clock=clock)
        queue.add("a", 10.0)
        first = queue.due("a")
        queue.add("a", 5.0)
        second = queue.due("a")
        queue.add("a", 20.0)
        third = queue.due("a")
        queue.close()
        return [first, second, third]

    assert run(scenario()) == [60.0, 55.0, 55.0]


def test_a_key_added_three_times_is_handed_out_once():
    async def scenario() -> tuple[int, str, int]:
        queue: WorkQueue[str] = WorkQueue()
        for _ in range(3):
            queue.add("a")
        queue.add("b")
        length = len(queue)
        first = await queue.get()
        second = await queue.get()
        return length, first + second, len(queue)

    assert run(scenario()) == (2, "ab", 0)


def test_a_key_added_while_it_runs_runs_again_after_once():
    async def scenario() -> list[int]:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a")
        key = await queue.get()
        queue.add("a")
        queue.add("a")
        during = len(queue)  # never handed to a second worker at the same time
        queue.done(key)
        after = len(queue)
        await queue.get()
        queue.done("a")
        return [during, after, len(queue)]

    assert run(scenario()) == [0, 1, 0]


def test_a_delayed_add_arrives():
    async def scenario() -> str:
        queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.01)
        _, delay = queue.failed("a")
        queue.add("a", delay)
        # Generous: this asserts arrival, not timing.
        key = await asyncio.wait_for(queue.get(), timeout=30)
        return key

    assert run(scenario()) == "a"


def test_a_changed_object_is_handed_out_before_the_background_backlog():
    """The stall at 5,000 Validations: a patched Validation queued behind thousands of start-up and
    resync keys. Counted by hand: the change first, then the backlog in its own order."""

    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        for index in range(5000):
            queue.add(f"listed-{index}", background=True)
        queue.add("patched")
        return [await queue.get() for _ in range(3)]

    assert run(scenario()) == ["patched", "listed-0", "listed-1"]


def test_a_background_key_woken_by_a_change_moves_ahead_and_is_handed_out_once():
    async def scenario() -> tuple[list[str], int]:
        queue: WorkQueue[str] = WorkQueue()
        for key in ("a", "b", "c"):
            queue.add(key, background=True)
        queue.add("c")  # c changed
        queue.add("c", background=True)  # a later background wake does not push it back
        order = [await queue.get() for _ in range(3)]
        return order, len(queue)

    assert run(scenario()) == (["c", "a", "b"], 0)


def test_a_key_changed_while_it_runs_keeps_the_front_lane_when_it_runs_again():
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a")
        key = await queue.get()
        queue.add("a", background=True)
        queue.add("a")  # the object changed during its pass
        queue.add("b", background=True)
        queue.done(key)
        return [await queue.get(), await queue.get()]

    assert run(scenario()) == ["a", "b"]


def test_a_retry_or_resync_coming_back_by_timer_is_background_work():
    async def scenario() -> list[str]:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("resync", 0.01)
        # Generous wait for the timer (asserts arrival, not timing).
        for _ in range(3000):
            if len(queue) == 1:
                break
            await asyncio.sleep(0.01)
        queue.add("changed")
        return [await queue.get(), await queue.get()]

    assert run(scenario()) == ["changed", "resync"]


def test_keys_of_each_kind_are_distinct_and_equal_by_value():
    keys = {ValidationKey("ns", "x"), DatasetKey("ns", "x"), AlgorithmKey("ns", "x"), PolicyKey("x")}
    assert len(keys) == 4
    assert ValidationKey("ns", "x") == ValidationKey("ns", "x")
    assert ValidationKey("ns", "x") != DatasetKey("ns", "x")


def test_reconcile_dispatches_each_key_to_its_kind(monkeypatch):
    calls: list[tuple[str, tuple[str, ...]]] = []

    def fake(kind: str):
        async def reconciler(runtime: Any, *args: str) -> float:
            calls.append((kind, args))
            return 1.0

        return reconciler

    monkeypatch.setattr(reconcile.validations, "reconcile_validation", fake("validation"))
    monkeypatch.setattr(reconcile.datasets, "reconcile_dataset", fake("dataset"))
    monkeypatch.setattr(reconcile.algorithms, "reconcile_algorithm", fake("algorithm"))
    monkeypatch.setattr(reconcile.sandboxpolicies, "reconcile_policy", fake("policy"))

    async def scenario() -> None:
        for key in (ValidationKey("n1", "v"), DatasetKey("n2", "d"), AlgorithmKey("n3", "a"), PolicyKey("p")):
            await reconcile.reconcile(None, key)  # type: ignore[arg-type]

    run(scenario())
    assert calls == [
        ("validation", ("n1", "v")), ("dataset", ("n2", "d")), ("algorithm", ("n3", "a")), ("policy", ("p",)),
    ]


def test_a_failing_pass_logs_one_traceback_then_one_line_per_retry_and_backs_off(monkeypatch, caplog):
    outcomes: list[Exception | float | None] = [
        RuntimeError("api down"), RuntimeError("api down"), RuntimeError("api down"), None, RuntimeError("again"),
    ]

    async def flaky(runtime: Any, key: Any) -> float | None:
        result = outcomes.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(reconcile, "reconcile", flaky)

    async def scenario() -> list[float | None]:
        runtime = Runtime(config=OperatorConfig(), kube=None, exporter=Exporter())  # type: ignore[arg-type]
        return [await runtime._pass(ValidationKey("ns", "v")) for _ in range(5)]

    with caplog.at_level(logging.DEBUG, logger="lightbox.operator"):
        delays = run(scenario())
    # 1, 2, 4 s; the success (no resync asked) resets; the next failure waits 1 s again.
    assert delays == [1.0, 2.0, 4.0, None, 1.0]
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 4
    assert [r.exc_info is not None for r in failures] == [True, False, False, True]
    assert "2 times in a row" in failures[1].getMessage() and "api down" in failures[1].getMessage()
    assert "\n" not in failures[2].getMessage()
