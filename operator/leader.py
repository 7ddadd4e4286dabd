"""Leader election on a coordination.k8s.io/v1 Lease: one operator replica acts, the others wait.

The algorithm is client-go's (``tools/leaderelection``), which controller-runtime
operators use:

* A candidate takes the Lease when it is free, or when the record it holds has not
  changed for ``leaseDurationSeconds`` *as measured on the candidate's own monotonic
  clock* from the moment the candidate first saw that record. The ``renewTime`` in
  the object is written for people (``kubectl get lease``) and never trusted, so a
  skewed clock on another node cannot make a lease look expired.
* The holder renews every ``retry`` seconds. Every write carries the
  ``resourceVersion`` it read, so of two candidates racing for an expired lease the
  API server accepts one (the other gets 409 Conflict and keeps waiting).
* The holder gives up when it has not renewed for ``renew_deadline`` seconds, which
  is shorter than the lease duration: it stops acting before any other replica may
  start. Giving up ends the process (see ``handlers``), as controller-runtime does:
  a fresh standby rebuilds its caches from the cluster rather than trusting state
  from a term it no longer holds.

Everything that decides is a pure function of (record, what we saw, clock); the
``LeaderElector`` is the thin loop that reads and writes the Lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

log = logging.getLogger("lightbox.operator.leader")

LEASE_API = "/apis/coordination.k8s.io/v1"
DEFAULT_LEASE_NAME = "lightbox-operator"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class LeaseConflict(Exception):
    """Another replica wrote the Lease between our read and our write (HTTP 409)."""


@dataclass(frozen=True)
class LeaseSettings:
    """Where the Lease lives, who we are, and the three durations of the algorithm (seconds)."""

    namespace: str
    identity: str
    name: str = DEFAULT_LEASE_NAME
    # client-go's defaults are 15/10/2: a standby takes over at most duration + retry
    # after the holder's last renewal (17 s), well inside the 30 s the design asks for.
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError(
                "leader election needs 0 < retry < renew deadline < lease duration "
                f"(got retry {self.retry}, renew deadline {self.renew_deadline}, duration {self.duration}): "
                "the holder must give up before a standby may take over"
            )
        if not self.namespace or not self.identity:
            raise ValueError("leader election needs the Lease's namespace and this replica's identity")


@dataclass(frozen=True)
class LeaseRecord:
    """The part of a Lease the election reads. ``version`` is metadata.resourceVersion."""

    holder: str | None
    duration: float
    transitions: int
    acquired: str | None
    renewed: str | None
    version: str

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or None,
            duration=float(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquired=spec.get("acquireTime"),
            renewed=spec.get("renewTime"),
            version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
        )

    def content(self) -> tuple[object, ...]:
        """What changes when anyone writes the Lease. The resourceVersion does on every write, even
        when a holder's wall clock stands still and so writes the same renewTime again."""
        return (self.version, self.holder, self.duration, self.transitions, self.acquired, self.renewed)


@dataclass(frozen=True)
class Observation:
    """A Lease record and when (our monotonic clock) we first saw it in this form."""

    record: LeaseRecord
    seen_at: float


def observe(previous: Observation | None, record: LeaseRecord, now: float) -> Observation:
    """Keep the first time we saw this content: a holder that stopped renewing keeps its old ``seen_at``."""
    if previous is not None and previous.record.content() == record.content():
        return Observation(record, previous.seen_at)
    return Observation(record, now)


def may_take(observation: Observation | None, identity: str, now: float) -> bool:
    """Whether ``identity`` may write itself as holder: no Lease yet, a free one, ours, or one gone stale."""
    if observation is None:
        return True
    record = observation.record
    if record.holder is None or record.holder == identity:
        return True
    return now >= observation.seen_at + record.duration


def must_step_down(last_renewed: float, now: float, renew_deadline: float) -> bool:
    """The holder has not renewed within the deadline: others may take over soon, so stop acting now."""
    return now - last_renewed >= renew_deadline


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claimed_spec(record: LeaseRecord | None, settings: LeaseSettings, wall: datetime) -> dict[str, Any]:
    """The spec that makes us holder: acquireTime and leaseTransitions move only when the holder changes."""
    stamp = micro_time(wall)
    if record is None:
        transitions, acquired = 0, stamp
    elif record.holder == settings.identity:
        transitions, acquired = record.transitions, record.acquired or stamp
    else:
        transitions, acquired = record.transitions + 1, stamp
    return {
        "holderIdentity": settings.identity,
        "leaseDurationSeconds": max(1, round(settings.duration)),
        "acquireTime": acquired,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaseRecord) -> dict[str, Any]:
    """client-go's release: no holder and a 1 s duration, so a standby takes over at once."""
    return {
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "acquireTime": record.acquired,
        "renewTime": record.renewed,
        "leaseTransitions": record.transitions,
    }


def default_identity() -> str:
    """The pod's name in a cluster (its hostname) and the pid, unique among processes on one host too."""
    return f"{socket.gethostname()}-{os.getpid()}"


def default_namespace() -> str | None:
    """In a pod, the namespace of its ServiceAccount; elsewhere there is no sensible default."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


# -- the I/O shell ----------------------------------------------------------------


class LeaseStore(Protocol):
    async def read(self) -> LeaseRecord | None: ...

    async def create(self, spec: dict[str, Any]) -> LeaseRecord: ...

    async def update(self, spec: dict[str, Any], version: str) -> LeaseRecord: ...


class RestClient(Protocol):
    """The operator's API client as far as the Lease needs it (``operator.kube.Kube``)."""

    async def get(self, url: str) -> dict[str, Any] | None: ...

    async def create(self, url: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]: ...

    async def patch(self, url: str, body: dict[str, Any] | list[Any], kind: str = "merge") -> dict[str, Any] | None: ...


@dataclass
class KubeLeaseStore:
    """The Lease through the operator's REST client; conflicts surface as ``LeaseConflict``."""

    client: RestClient
    namespace: str
    name: str

    @property
    def collection(self) -> str:
        return f"{LEASE_API}/namespaces/{self.namespace}/leases"

    async def read(self) -> LeaseRecord | None:
        obj = await self.client.get(f"{self.collection}/{self.name}")
        return None if obj is None else LeaseRecord.from_object(obj)

    async def create(self, spec: dict[str, Any]) -> LeaseRecord:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name}, "spec": spec}
        obj, created = await self.client.create(self.collection, body)
        if not created:
            raise LeaseConflict(f"lease {self.namespace}/{self.name} was created by another replica")
        return LeaseRecord.from_object(obj)

    async def update(self, spec: dict[str, Any], version: str) -> LeaseRecord:
        # A resourceVersion in a patch is a precondition: the API server answers 409 if
        # anyone wrote the Lease since we read it.
        body = {"metadata": {"resourceVersion": version}, "spec": spec}
        try:
            obj = await self.client.patch(f"{self.collection}/{self.name}", body)
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                raise LeaseConflict(str(exc)) from exc
            raise
        if obj is None:
            raise LeaseConflict(f"lease {self.namespace}/{self.name} was deleted")
        return LeaseRecord.from_object(obj)


Clock = Callable[[], float]
WallClock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Started:
    """This replica holds the Lease now."""


@dataclass(frozen=True)
class Lost:
    """This replica must stop acting: ``reason`` says why."""

    reason: str


@dataclass
class LeaderElector:
    """One step per ``retry`` period (``tick``): a standby tries to take the Lease, the holder renews it.

    ``run`` calls ``on_started`` once the Lease is ours and ``on_lost`` when we cannot keep
    it; ``on_lost`` must stop every write (in practice: end the process). ``tick`` is the
    whole algorithm and takes its time from ``clock``, so tests drive it in virtual time.
    """

    settings: LeaseSettings
    store: LeaseStore
    clock: Clock = time.monotonic
    wall: WallClock = _utcnow
    leading: bool = False
    observation: Observation | None = None
    last_renewed: float = float("-inf")
    _announced: str | None = None

    async def run(self, on_started: Callable[[], Awaitable[None]], on_lost: Callable[[str], None]) -> None:
        while True:
            step = await self.tick()
            if isinstance(step, Started):
                log.info(
                    "leading as %s (lease %s/%s)", self.settings.identity, self.settings.namespace, self.settings.name
                )
                await on_started()
            elif isinstance(step, Lost):
                on_lost(step.reason)
                return
            await asyncio.sleep(self.settings.retry)

    async def tick(self) -> Started | Lost | None:
        now = self.clock()
        if not self.leading:
            return await self._stand_by(now)
        return await self._renew(now)

    async def _stand_by(self, now: float) -> Started | None:
        try:
            record = await self.store.read()
            self.observation = None if record is None else observe(self.observation, record, now)
            if not may_take(self.observation, self.settings.identity, now):
                self._announce()
                return None
            spec = claimed_spec(record, self.settings, self.wall())
            written = await (self.store.create(spec) if record is None else self.store.update(spec, record.version))
        except LeaseConflict as exc:
            log.debug("lost the race for the lease: %s", exc)
            return None
        except Exception as exc:  # noqa: BLE001  (an API hiccup: try again next period)
            log.warning("taking the lease %s/%s failed: %s", self.settings.namespace, self.settings.name, exc)
            return None
        self.observation = Observation(written, now)
        self.leading, self.last_renewed = True, now
        return Started()

    async def _renew(self, now: float) -> Lost | None:
        # The deadline is checked first: after a stall (a frozen process, a starved loop)
        # we must not act on a term that may have ended, whatever the next request says.
        if must_step_down(self.last_renewed, now, self.settings.renew_deadline):
            return self._lose(f"the lease was not renewed for {self.settings.renew_deadline:g} s")
        try:
            record = await self.store.read()
            if record is None or record.holder != self.settings.identity:
                return self._lose(f"the lease is held by {record.holder if record and record.holder else 'nobody'} now")
            written = await self.store.update(claimed_spec(record, self.settings, self.wall()), record.version)
        except LeaseConflict as exc:
            log.warning("renewing the lease conflicted: %s", exc)
        except Exception as exc:  # noqa: BLE001  (retried until the renew deadline)
            log.warning("renewing the lease failed: %s", exc)
        else:
            self.observation = Observation(written, now)
            self.last_renewed = now
            return None
        if must_step_down(self.last_renewed, self.clock(), self.settings.renew_deadline):
            return self._lose(f"the lease was not renewed for {self.settings.renew_deadline:g} s")
        return None

    def _lose(self, reason: str) -> Lost:
        self.leading = False
        return Lost(reason)

    def _announce(self) -> None:
        holder = self.observation.record.holder if self.observation else None
        if holder and holder != self._announced:
            log.info("standing by: lease %s/%s held by %s", self.settings.namespace, self.settings.name, holder)
            self._announced = holder

    def holds(self) -> bool:
        """Whether this replica may act now: it leads and its last renewal is within the deadline."""
        return self.leading and not must_step_down(self.last_renewed, self.clock(), self.settings.renew_deadline)

    async def release(self) -> None:
        """On a clean shutdown, after the workers stopped: hand over at once instead of after a lease duration."""
        if not self.leading:
            return
        self.leading = False
        try:
            record = await self.store.read()
            if record is not None and record.holder == self.settings.identity:
                await self.store.update(released_spec(record), record.version)
                log.info("released the lease %s/%s", self.settings.namespace, self.settings.name)
        except Exception as exc:  # noqa: BLE001  (the lease then expires by itself)
            log.warning("releasing the lease failed (it expires by itself): %s", exc)


# Exit status of a replica that lost the Lease (EX_TEMPFAIL): the pod restarts as a standby.
LEADERSHIP_LOST_EXIT = 75


class Closable(Protocol):
    async def close(self) -> None: ...


def exit_process(reason: str) -> None:
    """End the process at once: no worker of ours may write after another replica started acting."""
    log.critical("leadership lost (%s): exiting; the restarted process stands by", reason)
    logging.shutdown()
    os._exit(LEADERSHIP_LOST_EXIT)


@dataclass
class Campaign:
    """A running election: the elector, its task, and the client it alone uses."""

    elector: LeaderElector
    task: asyncio.Task[None]
    client: Closable

    async def end(self) -> None:
        """After the workers stopped (clean shutdown): stop renewing, hand the Lease over, close."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.elector.release()
        await self.client.close()


def campaign(
    settings: LeaseSettings,
    client: RestClient,
    on_started: Callable[[], Awaitable[None]],
    on_lost: Callable[[str], None] = exit_process,
) -> Campaign:
    """Stand for the Lease in the background. ``client`` is the election's own: renewals must
    not queue behind the reconcilers' requests in a shared connection pool."""
    elector = LeaderElector(settings, KubeLeaseStore(client, settings.namespace, settings.name))
    task = asyncio.create_task(elector.run(on_started, on_lost), name="lightbox-leader-election")
    return Campaign(elector, task, cast(Closable, client))
