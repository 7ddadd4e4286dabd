"""The controller's shared state and its worker pool; owned by one operator instance (kopf memo).

Watch handlers only add keys to the work queue; the workers take them off and
hand them to ``reconcile``. What a pass may read without asking the API server
(the watch-fed copies) and the run scheduler's bookkeeping live here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, cast

from lightbox.operator import reconcile
from lightbox.operator.config import OperatorConfig
from lightbox.operator.exporter import Exporter
from lightbox.operator.keys import AlgorithmKey, DatasetKey, Key, PolicyKey, ValidationKey
from lightbox.operator.kube import Kube
from lightbox.operator.scheduler import RunScheduler
from lightbox.operator.workqueue import WorkQueue

log = logging.getLogger("lightbox.operator")


@dataclass
class Runtime:
    config: OperatorConfig
    kube: Kube
    exporter: Exporter
    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    scheduler: RunScheduler = field(default_factory=RunScheduler)
    # namespace -> names of Validations seen by the watch (to wake dependents).
    validations: dict[str, set[str]] = field(default_factory=dict)
    api_server: str = ""
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    # Watch-fed copies of Algorithms and Datasets ((plural, namespace, name) -> (resourceVersion,
    # compact JSON)), and of the SandboxPolicy list, so a reconciliation does not GET what the
    # watch already delivered. A miss falls back to the API server. JSON text rather than the
    # decoded dict: 1 KB instead of 5 KB per Algorithm, 10,000 of them at 5,000 Validations
    # watched, for a parse of a few microseconds when a pass reads one.
    objects: dict[tuple[str, str, str], tuple[str | None, bytes]] = field(default_factory=dict)
    policies: list[dict[str, Any]] | None = None
    policies_loaded: float = -1e9
    # (namespace, name) -> resourceVersion of our last status write, to ignore its echo.
    own_writes: dict[tuple[str, str], str] = field(default_factory=dict)

    def observe(self, plural: str, namespace: str, name: str, obj: dict[str, Any] | None) -> bool:
        """Keep the watch's (or our write's) copy; False when the copy held was already this version:
        the echo of our own status write, or a listing after a reconnect that brings nothing new."""
        key = (plural, namespace, name)
        if obj is None:
            return self.objects.pop(key, None) is not None
        meta = obj.get("metadata") or {}
        version = meta.get("resourceVersion")
        held = self.objects.get(key)
        if held is not None and version is not None and held[0] == version:
            return False
        # Without metadata.managedFields, half of an object (4 of 9 KB for an Algorithm), which no
        # reconciliation reads.
        kept = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        self.objects[key] = (version, json.dumps(kept, separators=(",", ":")).encode())
        return True

    def cached(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The watch-fed copy (a fresh dict each time, the caller's to change), or None."""
        held = self.objects.get((plural, namespace, name))
        return None if held is None else cast("dict[str, Any]", json.loads(held[1]))

    def lock(self, namespace: str) -> asyncio.Lock:
        return self.locks.setdefault(namespace, asyncio.Lock())

    def crash(self, point: str) -> None:
        """Restart-safety test hook: die like a SIGKILL at a named point."""
        if self.config.crash_at == point:
            log.warning("crash hook %s: exiting abruptly", point)
            logging.shutdown()
            os._exit(86)

    # -- waking reconcilers ----------------------------------------------------

    def wake_validation(self, namespace: str, name: str, delay: float = 0.0, background: bool = False) -> None:
        self.queue.add(ValidationKey(namespace, name), delay, background=background)

    def wake_dataset(self, namespace: str, name: str, background: bool = False) -> None:
        self.queue.add(DatasetKey(namespace, name), background=background)

    def wake_algorithm(self, namespace: str, name: str, background: bool = False) -> None:
        self.queue.add(AlgorithmKey(namespace, name), background=background)

    def wake_policy(self, name: str) -> None:
        self.queue.add(PolicyKey(name))

    # A fan-out to many objects is background work: a change of one object goes before it.

    def wake_namespace(self, namespace: str) -> None:
        for name in sorted(self.validations.get(namespace, ())):
            self.wake_validation(namespace, name, background=True)

    def wake_all(self) -> None:
        for namespace in sorted(self.validations):
            self.wake_namespace(namespace)

    def wake_algorithms(self) -> None:
        """Policies changed: every Algorithm's Allowed condition may have too."""
        for plural, namespace, name in sorted(self.objects):
            if plural == "algorithms":
                self.wake_algorithm(namespace, name, background=True)

    def wake_heads(self, namespace: str, count: int) -> None:
        """Wake the Validations of the first ``count`` queued runs in the namespace."""
        for name in self.scheduler.heads(namespace, count):
            self.wake_validation(namespace, name)

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
            try:
                delay = await self._pass(key)
            finally:
                self.queue.done(key)
            if delay:
                self.queue.add(key, delay)

    async def _pass(self, key: Key) -> float | None:
        """One reconciliation of ``key``; the delay before the next (a backoff after a failure)."""
        began = asyncio.get_running_loop().time()
        try:
            delay = await reconcile.reconcile(self, key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (one bad object must not stop the others)
            failures, backoff = self.queue.failed(key)
            if failures == 1:
                log.exception("reconciling %s failed; retrying in %.0f s", key, backoff)
            else:
                # The traceback was logged at the first failure; one line per retry after it.
                log.warning("reconciling %s failed %d times in a row (%s: %s); retrying in %.0f s",
                            key, failures, type(exc).__name__, str(exc)[:300], backoff)
            return backoff
        self.queue.succeeded(key)
        log.debug("reconciled %s in %.3f s; again in %s s", key, asyncio.get_running_loop().time() - began, delay)
        return delay
