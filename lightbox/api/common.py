"""Building blocks shared by the custom resources.

``x-kubernetes-validations`` (CEL) rules ride along in ``json_schema_extra`` so
the CRD generator can copy them into the schema next to the field they guard:
the API server then rejects bad manifests at ``kubectl apply`` time with a
message that names the field and what is allowed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from lightbox.api.results import Model

API_GROUP = "lightbox.dev"
API_VERSION = "v1alpha1"
CATEGORY = "lightbox"

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Registry host (with a dot or a port, or localhost) so the allow-list check is unambiguous.
REGISTRY = r"(localhost|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+)(:[0-9]{1,5})?"
IMAGE_BY_DIGEST = (
    r"^" + REGISTRY + r"(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?@sha256:[a-f0-9]{64}$"
)


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def quantity_field(description: str, default: str | None = None, maximum: str | None = None) -> Any:
    """A Kubernetes resource quantity such as ``500m``, ``4Gi``, checked by the API server."""
    rules = [cel("isQuantity(self)", "must be a Kubernetes quantity such as 500m, 2, 512Mi or 4Gi")]
    if maximum:
        rules.append(
            cel(
                f"!isQuantity(self) || quantity(self).compareTo(quantity('{maximum}')) <= 0",
                f"must be at most {maximum}",
            )
        )
    return Field(default=default, max_length=32, description=description, json_schema_extra=validations(*rules))


class Condition(Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=64, description="Condition type, e.g. Ready, Admitted, Isolated.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", max_length=128, description="CamelCase reason code.")
    message: str = Field(default="", max_length=4096, description="Human-readable explanation.")
    last_transition_time: datetime | None = Field(default=None, description="When the status last changed.")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition reflects.")


class ObjectReference(Model):
    """A reference to another Lightbox object in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
        description="Name of the referenced object in the same namespace.",
    )


class VolumeLocation(Model):
    """Where a tree of files lives: a PersistentVolumeClaim and a path inside it."""

    claim_name: str = Field(
        min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN, description="PersistentVolumeClaim name."
    )
    sub_path: str = Field(
        default="",
        max_length=1024,
        description="Relative path inside the claim ('' for its root).",
        json_schema_extra=validations(
            cel(
                "!self.startsWith('/') && !self.split('/').exists(p, p == '..')",
                "must be a relative path without '..' segments",
            )
        ),
    )


class Toleration(Model):
    """A pod toleration, so sandbox pods can land on tainted GPU nodes."""

    key: str = Field(default="", max_length=316, description="Taint key; empty with Exists matches all taints.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str = Field(default="", max_length=63, description="Taint value for Equal.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="", description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(default=None, ge=0, description="For NoExecute: how long to stay bound.")


class KubeObject(Model):
    """Common envelope of a custom resource. Subclasses set the class-level CRD facts."""

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]]
    scope: ClassVar[Literal["Namespaced", "Cluster"]]
    printer_columns: ClassVar[tuple[dict[str, Any], ...]]

    api_version: Literal["lightbox.dev/v1alpha1"] = Field(default=f"{API_GROUP}/{API_VERSION}", alias="apiVersion")
    kind: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


def age_column() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
