"""SandboxPolicy: the cluster's rules for every sandbox run."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from lightbox.api.approval import Identity
from lightbox.api.common import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    QUEUE_NAME,
    REGISTRY,
    Condition,
    KubeObject,
    Toleration,
    age_column,
    cel,
    no_control_characters,
    quantity_field,
    validations,
)
from lightbox.api.results import Model

TextValue = Annotated[str, Field(max_length=63, json_schema_extra=validations(no_control_characters()))]


RegistryPrefix = Annotated[
    str,
    Field(
        max_length=256,
        json_schema_extra=validations(
            cel(
                f"self.matches(r'^{REGISTRY}(/[a-z0-9]+([._-][a-z0-9]+)*)*$')",
                "must be a registry host (with a dot, a port, or localhost) optionally followed by /path",
            )
        ),
    ),
]


class IsolationProbe(Model):
    """The self-test that proves NetworkPolicies are enforced before vendor code runs."""

    required: bool = Field(default=True, description="Start no vendor container in a namespace until its probe passed.")
    interval_seconds: int = Field(default=3600, ge=60, le=604800, description="Re-probe each namespace this often.")


class ApprovalRequirement(Model):
    """How many distinct people must approve an Algorithm's exact build before it runs (docs/approvals.md)."""

    required: int = Field(default=0, ge=0, le=16, description="Approvals needed; 0 turns approvals off.")
    distinct_groups: list[Identity] = Field(
        default_factory=list,
        max_length=16,
        description="Each of these groups must be among the counted approvers' groups "
        "(e.g. radiology-qa, it-security).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class SandboxPolicySpec(Model):
    """Limits and placement every sandbox run must respect."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            # Otherwise an algorithm within maxGpusPerRun could wait forever for GPUs the namespace never has.
            cel(
                "self.maxGpusInUse >= self.maxGpusPerRun",
                "maxGpusInUse must be at least maxGpusPerRun: a run allowed maxGpusPerRun GPUs could never start",
                field_path=".maxGpusInUse",
            ),
        )
    }

    allowed_registries: list[RegistryPrefix] = Field(
        min_length=1,
        max_length=64,
        description="Image prefixes allowed, as REGISTRY[/PATH], e.g. registry.vendor.example/radiology; each once.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    require_digest: bool = Field(default=True, description="Only images pinned by @sha256 digest may run.")
    max_gpus_per_run: int = Field(default=1, ge=0, le=16, description="Most GPUs one run may request.")
    max_run_seconds: int = Field(
        default=14400, ge=60, le=172800, description="Longest timeout an algorithm may ask for."
    )
    max_cpu: str = quantity_field("Most CPU one run may request.", default="8", maximum="256")
    max_memory: str = quantity_field("Most memory one run may request.", default="64Gi", maximum="2Ti")
    max_ephemeral_storage: str = quantity_field(
        "Most scratch disk one run may request.", default="50Gi", maximum="10Ti"
    )
    runtime_class_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS1123_SUBDOMAIN,
        description="RuntimeClass for sandbox pods, e.g. gvisor or kata.",
    )
    node_selector: dict[str, TextValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Node labels sandbox pods require, e.g. nvidia.com/gpu.present: 'true' (at most 32).",
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=16, description="Tolerations for GPU nodes.")
    min_subgroup_size: int = Field(
        default=10, ge=5, le=10000, description="Subgroups smaller than this are suppressed in reports (at least 5)."
    )
    pooled_evidence: bool = Field(
        default=False,
        description="Keep each classification run's pooling evidence (per-class score histograms, confusion counts) in "
        "its audit record, for `lightbox evidence export` and pooling across regions. Off by default: the histograms "
        "follow the vendor's scores, about 72 bits per run for 1,000 cases (docs/covert-channel.md).",
    )
    namespaces: list[Annotated[str, Field(max_length=63, pattern=DNS1123_LABEL)]] = Field(
        default_factory=list,
        max_length=256,
        description="Namespaces this policy governs; empty means all. "
        "A namespace governed by two policies runs nothing.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    max_concurrent_runs: int = Field(default=2, ge=1, le=1000, description="Runs at once per namespace; others queue.")
    max_gpus_in_use: int = Field(default=8, ge=0, le=1024, description="GPUs in use at once per namespace.")
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=QUEUE_NAME,
        description="Kueue LocalQueue: Jobs carry kueue.x-k8s.io/queue-name and start suspended.",
    )
    isolation_probe: IsolationProbe = Field(default_factory=IsolationProbe, description="Network isolation self-test.")
    approvals: ApprovalRequirement = Field(
        default_factory=ApprovalRequirement, description="AlgorithmApprovals needed before an Algorithm runs."
    )


class NamespaceIsolation(Model):
    """Outcome of the isolation probe in one namespace."""

    isolated: bool = Field(description="True when nothing answered the probe.")
    checked_at: datetime | None = Field(default=None, description="When the probe finished.")
    message: str | None = Field(default=None, max_length=1024, description="What answered, if anything.")
    probe: str | None = Field(default=None, max_length=253, description="Name of the probe pod.")


class SandboxPolicyStatus(Model):
    conditions: list[Condition] | None = Field(default=None, description="Isolated and friends.")
    isolation: dict[str, NamespaceIsolation] | None = Field(default=None, description="Probe outcome per namespace.")
    observed_generation: int | None = None


class SandboxPolicy(KubeObject):
    """Cluster-wide rules for sandbox runs: registries, limits, runtime class and GPU node placement."""

    kind_name: ClassVar[str] = "SandboxPolicy"
    plural: ClassVar[str] = "sandboxpolicies"
    short_names: ClassVar[tuple[str, ...]] = ("sbpol",)
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Cluster"
    printer_columns: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Runtime", "type": "string", "jsonPath": ".spec.runtimeClassName"},
        {"name": "Max GPUs", "type": "integer", "jsonPath": ".spec.maxGpusPerRun"},
        {"name": "Concurrent", "type": "integer", "jsonPath": ".spec.maxConcurrentRuns"},
        {"name": "Isolated", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Isolated')].status"},
        age_column(),
    )

    kind: Literal["SandboxPolicy"] = "SandboxPolicy"
    spec: SandboxPolicySpec
    status: SandboxPolicyStatus | None = None

