"""kopf registration: watch events become work-queue keys; ``reconcile`` does the work.

Thin on purpose. Only ``on.event`` handlers are used, so kopf adds no
finalizers and writes nothing into the objects; deletion is left to owner
references and the garbage collector. The handlers are coroutines: kopf runs a
plain function in a thread pool, where touching the work queue (an
asyncio.Queue) would race the event loop, and every event would pay a thread hop. Load with
``kopf run -m lightbox.operator.handlers`` or ``lightbox operator``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from lightbox.api import run as layout
from lightbox.operator import builders, outcome
from lightbox.operator.conclude import ensure_audit_namespace
from lightbox.operator.config import OperatorConfig
from lightbox.operator.dependents import Dependents
from lightbox.operator.exporter import Exporter
from lightbox.operator.kube import Kube, KubeError, path
from lightbox.operator.kubeauth import Source, kopf_login
from lightbox.operator.leader import Campaign, LeaseSettings, campaign
from lightbox.operator.runtime import Runtime

GROUP, VERSION = "lightbox.dev", "v1alpha1"
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class _NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """No "essence" of an object to find what changed: kopf builds one (a deep copy of the whole
    body) on every event of every watched object, for on.create/update/field handlers, of which
    this operator has none (on.event only). 13% of the operator's samples at 500 Validations
    (docs/performance.md). A change-detecting handler added later needs the parent's build back."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    # Our status schema is structural and prunes unknown fields: kopf must keep its
    # bookkeeping in annotations, under our prefix, never in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="lightbox.dev")
    settings.persistence.diffbase_storage = _NoDiffBase(prefix="lightbox.dev", key="last-handled-configuration")
    settings.persistence.finalizer = "lightbox.dev/finalizer"
    settings.posting.level = 30  # kopf's own events only for warnings; ours are posted explicitly
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330

    config: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    exporter = Exporter()
    if config.metrics_port >= 0:
        port = exporter.serve(config.metrics_port)
        logger.info(f"metrics on :{port}/metrics")
        memo["metrics_port"] = port
    kube = await Kube.connect(memo.get("kubeconfig"))
    runtime = Runtime(config=config, kube=kube, exporter=exporter, api_server=kube.host)
    exporter.count_active_jobs(lambda: runtime.scheduler.active_jobs)
    # The Validations present now: until each has had a pass the queue order is unknown
    # (scheduler). Listed here, before the watches start, rather than by a kopf index (see
    # operator/dependents.py for why).
    present = await _listed_validations(kube, config.namespaces)
    runtime.scheduler.start_sync(present)
    for ns, store in present.items():
        runtime.validations.setdefault(ns, set()).update(n for n, _ in store)
    memo["dependents"] = Dependents()
    memo["runtime"] = runtime

    async def act() -> None:
        # Everything that writes to the cluster starts here: the watches above run in a
        # standby replica too, only filling its caches and work queue (docs/ha.md).
        exporter.leader.set(1)
        await ensure_audit_namespace(runtime, logger)
        runtime.start()

    lease: LeaseSettings | None = memo.get("leader")
    if lease is None:
        await act()
    else:
        memo["campaign"] = campaign(lease, await Kube.connect(memo.get("kubeconfig")), act)


async def _listed_validations(
    kube: Kube, namespaces: tuple[str, ...], attempts: int = 60
) -> dict[str, list[tuple[str, str]]]:
    """namespace -> (name, creationTimestamp) of the Validations there now (all namespaces when none given).

    A just-started API server answers 429 ("storage is (re)initializing") for a while, as do
    overloaded ones; this is retried every second here, since kopf would retry the whole
    start-up only after a minute."""
    for attempt in range(1, attempts + 1):
        try:
            return await _list_names(kube, namespaces)
        except KubeError as exc:
            if exc.status not in TRANSIENT_STATUSES or attempt == attempts:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


async def _list_names(kube: Kube, namespaces: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
    """Page by page, keeping only names and creation times: the whole list decoded at once is
    about 5 KB per Validation at the operator's peak, for two strings each."""
    out: dict[str, list[tuple[str, str]]] = {}
    for namespace in namespaces or (None,):
        async for page in kube.pages(path("validations", namespace)):
            for item in page:
                meta = item.get("metadata") or {}
                listed = (meta.get("name", ""), meta.get("creationTimestamp") or "")
                out.setdefault(meta.get("namespace", ""), []).append(listed)
    return out


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """The same credentials as our own client, read again each time: kopf logs in again after a 401."""
    return await kopf_login(Source(memo.get("kubeconfig")))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.stop()
    elected: Campaign | None = memo.get("campaign")
    if elected is not None:
        await elected.end()  # after the workers stopped: hand the Lease over at once


def _wake_dependents(memo: kopf.Memo, namespace: str, plural: str, name: str, background: bool) -> None:
    runtime: Runtime = memo["runtime"]
    dependents: Dependents = memo["dependents"]
    for validation in dependents.of(namespace, plural, name):
        runtime.wake_validation(namespace, validation, background=background)


def _listed(event: dict[str, Any]) -> bool:
    """kopf's start-up listing (and its listing after a lost watch) has no event type: background
    work, which a change of an object goes before (workqueue)."""
    return event.get("type") is None


@kopf.on.event(GROUP, VERSION, "validations")
async def validation_event(event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    current = _current(event)
    dependents: Dependents = memo["dependents"]
    dependents.update(namespace, name, None if current is None else current.get("spec") or {})
    if event.get("type") == "DELETED":
        runtime.validations.get(namespace, set()).discard(name)
        runtime.own_writes.pop((namespace, name), None)
    else:
        known = runtime.validations.setdefault(namespace, set())
        if name not in known:
            created = ((event.get("object") or {}).get("metadata") or {}).get("creationTimestamp") or ""
            runtime.scheduler.arrived(namespace, name, created)
        known.add(name)
        version = ((event.get("object") or {}).get("metadata") or {}).get("resourceVersion")
        if version is not None and runtime.own_writes.get((namespace, name)) == version:
            return  # the echo of our own status write: nothing new to look at
    runtime.wake_validation(namespace, name, background=_listed(event))


def _current(event: dict[str, Any]) -> dict[str, Any] | None:
    obj = event.get("object")
    return None if event.get("type") == "DELETED" or not isinstance(obj, dict) else obj


@kopf.on.event(GROUP, VERSION, "algorithms")
async def algorithm_event(event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    new = runtime.observe("algorithms", namespace, name, _current(event))
    if new and event.get("type") != "DELETED":
        runtime.wake_algorithm(namespace, name, background=_listed(event))
    # Also on the echo of our own status write: a Validation that looked before it may be allowed now.
    _wake_dependents(memo, namespace, "algorithms", name, background=_listed(event) or not new)


@kopf.on.event(GROUP, VERSION, "algorithmapprovals")
async def approval_event(event: dict[str, Any], namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """An approval came or went: the Algorithm it names may be allowed now, and its Validations may run."""
    runtime: Runtime = memo["runtime"]
    algorithm = (((event.get("object") or {}).get("spec")) or {}).get("algorithm")
    if isinstance(algorithm, str) and algorithm:
        runtime.wake_algorithm(namespace, algorithm, background=_listed(event))
        _wake_dependents(memo, namespace, "algorithms", algorithm, background=_listed(event))


@kopf.on.event(GROUP, VERSION, "datasets")
async def dataset_event(event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    new = runtime.observe("datasets", namespace, name, _current(event))
    if new and event.get("type") != "DELETED":
        runtime.wake_dataset(namespace, name, background=_listed(event))
    _wake_dependents(memo, namespace, "datasets", name, background=_listed(event) or not new)


@kopf.on.event(GROUP, VERSION, "sandboxpolicies")
async def policy_event(name: str, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    runtime.policies = None
    runtime.wake_policy(name)
    runtime.wake_all()
    runtime.wake_algorithms()


@kopf.on.event("batch", "v1", "jobs", labels={layout.LABEL_COMPONENT: kopf.PRESENT})
async def job_event(
    event: dict[str, Any],
    labels: dict[str, str],
    namespace: str,
    annotations: dict[str, str],
    memo: kopf.Memo,
    **_: Any,
) -> None:
    runtime: Runtime = memo["runtime"]
    job = event.get("object")
    if not isinstance(job, dict):
        return
    if labels.get(layout.LABEL_COMPONENT) == builders.COMPONENT_RUN:
        runtime.scheduler.observe_job(namespace, job, deleted=event.get("type") == "DELETED")
    if outcome.job_event_matters(event.get("type"), job):
        _wake_owner(runtime, namespace, annotations, _listed(event))


@kopf.on.event("", "v1", "pods", labels={layout.LABEL_COMPONENT: kopf.PRESENT})
async def pod_event(
    event: dict[str, Any], namespace: str, annotations: dict[str, str], memo: kopf.Memo, **_: Any
) -> None:
    pod = event.get("object")
    if isinstance(pod, dict) and outcome.pod_event_matters(event.get("type"), pod):
        _wake_owner(memo["runtime"], namespace, annotations, _listed(event))


def _wake_owner(runtime: Runtime, namespace: str, annotations: dict[str, str], background: bool) -> None:
    if builders.ANNOTATION_VALIDATION in annotations:
        runtime.wake_validation(namespace, annotations[builders.ANNOTATION_VALIDATION], background=background)
    elif builders.ANNOTATION_DATASET in annotations:
        runtime.wake_dataset(namespace, annotations[builders.ANNOTATION_DATASET], background=background)
    elif builders.ANNOTATION_POLICY in annotations:
        runtime.wake_policy(annotations[builders.ANNOTATION_POLICY])
