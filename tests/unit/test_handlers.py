"""The kopf handlers are coroutines, so they run on the event loop that owns the work queue.

kopf runs a plain function in a thread pool: there, ``WorkQueue.add`` (an
asyncio.Queue and plain sets) would race the workers on the loop, and a wake-up
could be lost or delayed until some other event woke the loop.
"""

from __future__ import annotations

import inspect

from lightbox.operator import handlers


def test_every_handler_is_a_coroutine():
    # Every public function of the module is a kopf handler (kopf's decorators return it unchanged).
    public = {name: fn for name, fn in vars(handlers).items()
              if inspect.isfunction(fn) and fn.__module__ == handlers.__name__ and not name.startswith("_")}
    assert {"validation_event", "algorithm_event", "job_event", "pod_event", "startup"} <= set(public)
    assert [name for name, fn in public.items() if not inspect.iscoroutinefunction(fn)] == []


async def _drain(runtime) -> set:
    keys = set()
    while len(runtime.queue):
        key = await runtime.queue.get()
        runtime.queue.done(key)
        keys.add(key)
    return keys


def test_an_algorithm_or_dataset_event_wakes_only_the_validations_that_name_it():
    import asyncio

    from lightbox.operator.dependents import Dependents
    from lightbox.operator.keys import AlgorithmKey, DatasetKey, ValidationKey
    from lightbox.operator.runtime import Runtime

    specs = {  # three Validations of one namespace, two sharing an Algorithm
        "chest-v1": {"algorithmRef": {"name": "chest"}, "datasetRef": {"name": "ward-a"}},
        "chest-v2": {"algorithmRef": {"name": "chest"}, "datasetRef": {"name": "ward-b"}},
        "knee-v1": {"algorithmRef": {"name": "knee"}, "datasetRef": {"name": "ward-b"}},
    }

    async def queued_after(plural: str, name: str, deleted: tuple[str, ...] = ()) -> set:
        runtime = Runtime(config=None, kube=None, exporter=None)  # type: ignore[arg-type]
        memo = {"runtime": runtime, "dependents": Dependents()}
        for validation, spec in specs.items():  # the watch delivers the Validations first
            event = {"type": "ADDED", "object": {"metadata": {"name": validation}, "spec": spec}}
            await handlers.validation_event(event=event, namespace="region", name=validation, memo=memo)
        for validation in deleted:
            event = {"type": "DELETED", "object": {"metadata": {"name": validation}, "spec": specs[validation]}}
            await handlers.validation_event(event=event, namespace="region", name=validation, memo=memo)
        await _drain(runtime)
        event = {"type": "MODIFIED", "object": {"metadata": {"name": name}}}
        handler = handlers.algorithm_event if plural == "algorithms" else handlers.dataset_event
        await handler(event=event, namespace="region", name=name, memo=memo)
        return await _drain(runtime)

    assert asyncio.run(queued_after("algorithms", "chest")) == {
        AlgorithmKey("region", "chest"), ValidationKey("region", "chest-v1"), ValidationKey("region", "chest-v2")}
    assert asyncio.run(queued_after("datasets", "ward-b")) == {
        DatasetKey("region", "ward-b"), ValidationKey("region", "chest-v2"), ValidationKey("region", "knee-v1")}
    assert asyncio.run(queued_after("algorithms", "unused")) == {AlgorithmKey("region", "unused")}
    # a deleted Validation is not woken any more
    assert asyncio.run(queued_after("algorithms", "chest", deleted=("chest-v2",))) == {
        AlgorithmKey("region", "chest"), ValidationKey("region", "chest-v1")}


def test_the_watch_fed_copy_keeps_spec_and_status_without_managed_fields():
    from lightbox.operator.runtime import Runtime

    runtime = Runtime(config=None, kube=None, exporter=None)  # type: ignore[arg-type]
    body = {"metadata": {"name": "chest", "generation": 2, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"image": "x"}, "status": {"conditions": []}}
    runtime.observe("algorithms", "region", "chest", body)
    kept = runtime.cached("algorithms", "region", "chest")
    assert kept == {"metadata": {"name": "chest", "generation": 2},
                    "spec": {"image": "x"}, "status": {"conditions": []}}
    assert body["metadata"]["managedFields"] == [{"manager": "kubectl"}]  # kopf's body is not changed


def test_the_start_up_listing_waits_out_a_server_that_is_still_initialising():
    import asyncio

    import pytest

    from lightbox.operator.kube import KubeError

    class Server:
        """Answers 429 twice (a fresh API server's "storage is (re)initializing"), then lists."""

        def __init__(self, refusals: int, status: int = 429):
            self.refusals, self.status, self.calls = refusals, status, 0

        async def pages(self, url: str):
            self.calls += 1
            if self.calls <= self.refusals:
                raise KubeError(self.status, "storage is (re)initializing", "GET", url)
            yield [{"metadata": {"namespace": "region", "name": "chest", "creationTimestamp": "2026-01-01T00:00:00Z"}}]

    server = Server(refusals=2)
    listed = asyncio.run(handlers._listed_validations(server, ("region",)))  # type: ignore[arg-type]
    assert listed == {"region": [("chest", "2026-01-01T00:00:00Z")]} and server.calls == 3
    with pytest.raises(KubeError):  # a refusal that is not transient is not retried
        asyncio.run(handlers._listed_validations(Server(refusals=1, status=403), ("region",)))  # type: ignore[arg-type]


def test_the_echo_of_our_own_status_write_is_not_reconciled_again_and_a_change_goes_first():
    """The backlog behind the stall at 5,000: every Algorithm's own status write came back as an event
    and queued a second pass of it, ahead of a Validation the user changed later."""
    import asyncio

    from lightbox.operator.dependents import Dependents
    from lightbox.operator.keys import ValidationKey
    from lightbox.operator.runtime import Runtime

    async def scenario() -> list:
        runtime = Runtime(config=None, kube=None, exporter=None)  # type: ignore[arg-type]
        memo = {"runtime": runtime, "dependents": Dependents()}
        for validation, algorithm in (("chest-v1", "chest"), ("knee-v1", "knee")):
            listed = {"type": None, "object": {"metadata": {"name": validation, "resourceVersion": "1"},
                                               "spec": {"algorithmRef": {"name": algorithm}}}}
            await handlers.validation_event(event=listed, namespace="region", name=validation, memo=memo)
        # The Algorithm pass wrote its status (resourceVersion 7) and kept what the API server answered.
        written = {"metadata": {"name": "chest", "resourceVersion": "7"}, "status": {"conditions": []}}
        runtime.observe("algorithms", "region", "chest", written)
        echo = {"type": "MODIFIED", "object": written}
        await handlers.algorithm_event(event=echo, namespace="region", name="chest", memo=memo)
        changed = {"type": "MODIFIED", "object": {"metadata": {"name": "knee-v1", "resourceVersion": "8"},
                                                  "spec": {"algorithmRef": {"name": "knee"}, "historyLimit": 3}}}
        await handlers.validation_event(event=changed, namespace="region", name="knee-v1", memo=memo)
        order = []
        while len(runtime.queue):
            order.append(await runtime.queue.get())
        return order

    # Counted by hand: the changed Validation first; the listed one once (its Algorithm's echo
    # woke it again, in the background, where it already was); no AlgorithmKey at all.
    assert asyncio.run(scenario()) == [ValidationKey("region", "knee-v1"), ValidationKey("region", "chest-v1")]


def test_a_newer_version_of_an_algorithm_is_reconciled():
    import asyncio

    from lightbox.operator.dependents import Dependents
    from lightbox.operator.keys import AlgorithmKey
    from lightbox.operator.runtime import Runtime

    async def scenario() -> set:
        runtime = Runtime(config=None, kube=None, exporter=None)  # type: ignore[arg-type]
        memo = {"runtime": runtime, "dependents": Dependents()}
        runtime.observe("algorithms", "region", "chest", {"metadata": {"name": "chest", "resourceVersion": "7"}})
        edited = {"type": "MODIFIED", "object": {"metadata": {"name": "chest", "resourceVersion": "9"}}}
        await handlers.algorithm_event(event=edited, namespace="region", name="chest", memo=memo)
        return await _drain(runtime)

    assert asyncio.run(scenario()) == {AlgorithmKey("region", "chest")}


def test_each_read_of_the_watch_fed_copy_is_the_callers_own():
    from lightbox.operator.runtime import Runtime

    runtime = Runtime(config=None, kube=None, exporter=None)  # type: ignore[arg-type]
    runtime.observe("datasets", "region", "ward", {"metadata": {"name": "ward", "resourceVersion": "3"},
                                                  "status": {"phase": "Verified"}})
    first = runtime.cached("datasets", "region", "ward")
    first["status"]["phase"] = "Failed"  # a pass changing what it read
    assert runtime.cached("datasets", "region", "ward")["status"] == {"phase": "Verified"}
    assert runtime.cached("datasets", "region", "other") is None
