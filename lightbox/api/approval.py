"""AlgorithmApproval: one person's sign-off on one exact build of an Algorithm.

The approver is not something the writer chooses: a ValidatingAdmissionPolicy
(charts/lightbox/templates/approvals.yaml) refuses an approval whose
``spec.approver`` and ``spec.groups`` differ from the identity the API server
authenticated for the request, and refuses any change afterwards. The approval
names the image digest and version it approves, so a new build is not covered by
the old build's approvals (operator/approvals.py counts only matching ones).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from lightbox.api.common import DNS1123_SUBDOMAIN, KubeObject, age_column, cel, no_control_characters, validations
from lightbox.api.results import Model

# Kubernetes user and group names are free strings; these bounds keep them printable and short.
Identity = Annotated[str, Field(min_length=1, max_length=253, json_schema_extra=validations(no_control_characters()))]


class AlgorithmApprovalSpec(Model):
    """Who approves which build of which Algorithm (approver and groups: the requester's own, checked at admission)."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self == oldSelf", "an AlgorithmApproval cannot be changed once written", reason="FieldValueForbidden"),
        )
    }

    algorithm: str = Field(
        max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the Algorithm, in this namespace."
    )
    image_digest: str = Field(
        pattern=r"^sha256:[a-f0-9]{64}$",
        description="The digest (sha256:<64 hex>) of the Algorithm's spec.image this approval covers.",
    )
    version: str = Field(
        min_length=1,
        max_length=64,
        description="The Algorithm's spec.version this approval covers.",
        json_schema_extra=validations(no_control_characters()),
    )
    approver: Identity = Field(description="Your Kubernetes user name, exactly as the API server authenticates you.")
    groups: list[Identity] = Field(
        default_factory=list,
        max_length=64,
        description="Your Kubernetes groups, exactly as the API server authenticates you (all of them, or none).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    comment: str | None = Field(
        default=None,
        max_length=1024,
        description="Why, on one line.",
        json_schema_extra=validations(no_control_characters()),
    )


class AlgorithmApproval(KubeObject):
    """An approval of an Algorithm's exact image digest and version by an authenticated person."""

    kind_name: ClassVar[str] = "AlgorithmApproval"
    plural: ClassVar[str] = "algorithmapprovals"
    short_names: ClassVar[tuple[str, ...]] = ("algoapproval",)
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    printer_columns: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Algorithm", "type": "string", "jsonPath": ".spec.algorithm"},
        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
        {"name": "Approver", "type": "string", "jsonPath": ".spec.approver"},
        age_column(),
    )

    kind: Literal["AlgorithmApproval"] = "AlgorithmApproval"
    spec: AlgorithmApprovalSpec
