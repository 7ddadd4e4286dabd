"""Algorithm: a vendor's containerised imaging AI, pinned by digest."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from lightbox.api.common import (
    Condition,
    KubeObject,
    TextItem,
    age_column,
    cel,
    image_rules,
    no_control_characters,
    quantity_field,
    text_field,
    validations,
)
from lightbox.api.results import Model
from lightbox.api.run import Packaging, Task

# Beyond radiology: SM slide microscopy (pathology), GM general microscopy, XC external-camera
# photography (dermatology), OP ophthalmic photography, OPT ophthalmic tomography (OCT).
Modality = Literal["CT", "MR", "CR", "DX", "MG", "US", "PT", "NM", "XA", "RF", "SM", "GM", "XC", "OP", "OPT", "OT"]



class AlgorithmResources(Model):
    """Compute one run of the algorithm needs."""

    gpus: int = Field(default=0, ge=0, le=16, description="NVIDIA GPUs (nvidia.com/gpu) per run, 0 to 16.")
    cpu: str = quantity_field("CPU request and limit, e.g. 2 or 500m.", default="1", maximum="64")
    memory: str = quantity_field("Memory request and limit, e.g. 8Gi.", default="4Gi", maximum="512Gi")
    ephemeral_storage: str = quantity_field(
        "Scratch disk for the vendor container's output, e.g. 10Gi.", default="10Gi", maximum="1Ti"
    )


class Regulatory(Model):
    """Regulatory identity of the device (EU MDR)."""

    ce_class: Literal["I", "IIa", "IIb", "III"] | None = Field(
        default=None, description="EU MDR risk class: I, IIa, IIb or III."
    )
    udi: str | None = text_field("Unique Device Identifier (UDI-DI).", max_length=256, default=None)
    notified_body: str | None = text_field("Notified body number, e.g. 2797.", max_length=128, default=None)
    intended_use: str | None = text_field(
        "Intended use statement from the instructions for use, on one line.", max_length=8000, default=None
    )


class AlgorithmSpec(Model):
    """What the vendor ships and what one run of it needs."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel(
                "self.task != 'classification' || (has(self.labels) && size(self.labels) >= 2)",
                "classification algorithms must list at least two labels",
                field_path=".labels",
                message_expression="!has(self.labels) || size(self.labels) == 0 ? "
                "'classification algorithms must list at least two labels: none is listed' : "
                "'classification algorithms must list at least two labels: only one is listed'",
            ),
            cel(
                "!has(self.positiveLabel) || (has(self.labels) && self.positiveLabel in self.labels)",
                "positiveLabel must be one of labels",
                field_path=".positiveLabel",
            ),
        )
    }

    vendor: str = text_field("Manufacturer, as on the CE declaration.", min_length=1, max_length=128)
    product: str = text_field("Product name.", min_length=1, max_length=128)
    version: str = text_field("Product version the image implements.", min_length=1, max_length=64)
    image: str = Field(
        max_length=512,
        description="Container image pinned by digest: REGISTRY/REPOSITORY[:TAG]@sha256:<64 hex digits>.",
        json_schema_extra=validations(*image_rules()),
    )
    task: Task = Field(description="What the algorithm does: classification, detection or segmentation.")
    modality: Modality = Field(
        description="DICOM modality of the input (CT, MR, CR, DX, MG, US, PT, NM, XA, RF, SM, GM, XC, OP, OPT, OT)."
    )
    body_part: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Z0-9_ ]+$",
        description="DICOM Body Part Examined, e.g. CHEST, HEAD, BREAST.",
    )
    contract_version: Literal["v1"] = Field(default="v1", description="Version of the Lightbox vendor contract.")
    packaging: Packaging = Field(
        default="lightbox",
        description="The packaging the image follows: lightbox (our contract, default), monai-map (a MONAI "
        "Application Package) or grand-challenge (a grand-challenge algorithm container).",
    )
    labels: list[TextItem] | None = Field(
        default=None,
        max_length=64,
        description="Output labels (classification classes, detection finding types, segmentation structures), "
        "each once.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    positive_label: str | None = text_field(
        "For classification: the label scored as positive.", max_length=64, default=None
    )
    operating_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Score at or above which the vendor calls a case positive."
    )
    resources: AlgorithmResources = Field(default_factory=AlgorithmResources, description="Compute per run.")
    timeout_seconds: int = Field(
        default=3600, ge=60, le=172800, description="Wall-clock limit of one run in seconds (60 to 172800)."
    )
    regulatory: Regulatory | None = Field(default=None, description="CE class, UDI and intended use.")
    submitted_by: str | None = Field(
        default=None,
        max_length=253,
        description="Your Kubernetes user name; the API server checks it against the creator (approvals.yaml), "
        "and the submitter's own approval does not count.",
        json_schema_extra=validations(no_control_characters()),
    )


class AlgorithmStatus(Model):
    """What the operator found about the algorithm."""

    conditions: list[Condition] | None = Field(default=None, description="Allowed (by the SandboxPolicy).")
    observed_generation: int | None = Field(default=None, description="Generation last reconciled.")
    last_checked: datetime | None = Field(default=None, description="When the policy check last ran.")


class Algorithm(KubeObject):
    """A third-party imaging AI algorithm packaged to the Lightbox vendor contract."""

    kind_name: ClassVar[str] = "Algorithm"
    plural: ClassVar[str] = "algorithms"
    short_names: ClassVar[tuple[str, ...]] = ("algo",)
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    printer_columns: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Vendor", "type": "string", "jsonPath": ".spec.vendor"},
        {"name": "Product", "type": "string", "jsonPath": ".spec.product"},
        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
        {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
        {"name": "Modality", "type": "string", "jsonPath": ".spec.modality"},
        {"name": "Allowed", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Allowed')].status"},
        age_column(),
    )

    kind: Literal["Algorithm"] = "Algorithm"
    spec: AlgorithmSpec
    status: AlgorithmStatus | None = None
