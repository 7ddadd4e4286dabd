"""Reading what a pass depends on: parsed models, the watch-fed copies, a Job's pods.

A reconciliation reads from the copies the watches keep (``Runtime.objects``,
``Runtime.policies``) and falls back to the API server on a miss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from lightbox.api import Algorithm, AlgorithmApproval, Dataset, SandboxPolicy, Validation
from lightbox.operator import admission as admission_mod
from lightbox.operator.kube import path

if TYPE_CHECKING:
    from lightbox.operator.runtime import Runtime

log = logging.getLogger("lightbox.operator")

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL = "job-name"

M = TypeVar("M", bound=BaseModel)


def parse_model(cls: type[M], raw: dict[str, Any] | None) -> M | None:
    """The object as its model, or None (logged) when it does not parse: one bad object must not stop the others."""
    if raw is None:
        return None
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        log.warning("%s %s does not parse: %s", cls.__name__, raw.get("metadata", {}).get("name"), exc)
        return None


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def pods_by_job(pods: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        labels = pod["metadata"].get("labels") or {}
        job = labels.get(JOB_NAME_LABEL) or labels.get(LEGACY_JOB_NAME_LABEL)
        if job:
            out[job] = pod
    return out


def dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def load_dependencies(
    runtime: Runtime, validation: Validation, namespace: str
) -> tuple[Algorithm | None, Dataset | None, list[SandboxPolicy]]:
    kube = runtime.kube

    async def cached(plural: str, name: str) -> dict[str, Any] | None:
        hit = runtime.cached(plural, namespace, name)
        return hit if hit is not None else await kube.get(path(plural, namespace, name))

    algo_raw, data_raw, policies = await asyncio.gather(
        cached("algorithms", validation.spec.algorithm_ref.name),
        cached("datasets", validation.spec.dataset_ref.name),
        load_policies(runtime),
    )
    if data_raw is not None and data_raw["metadata"].get("deletionTimestamp"):
        data_raw = None  # being deleted: as good as gone for a run
    return parse_model(Algorithm, algo_raw), parse_model(Dataset, data_raw), policies


async def load_policies(runtime: Runtime) -> list[SandboxPolicy]:
    """All SandboxPolicies, re-listed at most every resync interval unless a policy event dropped the copy."""
    now = asyncio.get_running_loop().time()
    if runtime.policies is None or now - runtime.policies_loaded > runtime.config.resync_seconds:
        runtime.policies, runtime.policies_loaded = await runtime.kube.list(path("sandboxpolicies")), now
    return [p for p in (parse_model(SandboxPolicy, raw) for raw in runtime.policies) if p is not None]


async def load_approvals(runtime: Runtime, namespace: str, policies: list[SandboxPolicy]) -> list[AlgorithmApproval]:
    """The namespace's AlgorithmApprovals, listed only where the governing policy asks for approvals."""
    selected = admission_mod.select_policy(policies, namespace)
    if isinstance(selected, admission_mod.Problem):
        return []
    if selected.spec.approvals.required == 0 and not selected.spec.approvals.distinct_groups:
        return []
    raws = await runtime.kube.list(path("algorithmapprovals", namespace))
    return [a for a in (parse_model(AlgorithmApproval, raw) for raw in raws) if a is not None]

