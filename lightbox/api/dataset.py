"""Dataset: de-identified studies and their separately stored ground truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from lightbox.api.algorithm import Modality
from lightbox.api.common import Condition, KubeObject, VolumeLocation, age_column, cel, text_field, validations
from lightbox.api.results import Model
from lightbox.api.run import DatasetFormat, DeidOption


class Deidentification(Model):
    """The de-identification the data claims; the operator verifies it before every run."""

    profile: Literal["basic"] = Field(
        default="basic", description="DICOM PS3.15 Annex E profile: basic (Basic Application Level Confidentiality)."
    )
    options: list[DeidOption] = Field(
        default_factory=list,
        max_length=10,
        description="Profile options applied, named after the columns of PS3.15 Table E.1-1.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class DatasetSpec(Model):
    """Where the data lives. The ground truth is never mounted into a vendor container."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            # Sub-paths are normalised (VolumeLocation), so containment is a prefix
            # ending at a '/'. Compared without case: a claim on a case-insensitive
            # file system would otherwise let Truth and truth name one folder.
            cel(
                "self.groundTruth.claimName != self.studies.claimName || ("
                "self.studies.subPath != '' && self.groundTruth.subPath != '' && "
                "self.groundTruth.subPath.lowerAscii() != self.studies.subPath.lowerAscii() && "
                "!self.groundTruth.subPath.lowerAscii().startsWith(self.studies.subPath.lowerAscii() + '/') && "
                "!self.studies.subPath.lowerAscii().startsWith(self.groundTruth.subPath.lowerAscii() + '/'))",
                "groundTruth must not overlap studies: use another claim, or two sub-paths of the same claim neither "
                "of which contains the other ('' is the claim's root and contains everything; compared ignoring case)",
                field_path=".groundTruth",
            ),
        )
    }

    studies: VolumeLocation = Field(description="The de-identified DICOM studies, one folder per case.")
    ground_truth: VolumeLocation = Field(description="Reference labels/masks; read only by the trusted scorer.")
    deidentification: Deidentification = Field(
        default_factory=Deidentification, description="The de-identification profile the studies claim."
    )
    format: DatasetFormat = Field(
        default="dicom",
        description="How the studies are stored: dicom (one folder of DICOM files per case, incl. DICOM WSI), "
        "slide-tiff (whole-slide TIFF/SVS, one folder per case) or photo (JPEG/PNG/HEIC photos, one folder per case).",
    )
    modality: Modality | None = Field(default=None, description="Predominant DICOM modality.")
    description: str | None = text_field("Cohort description for reports, on one line.", max_length=4000, default=None)
    site: str | None = text_field("Site or hospital code used for subgroup reporting.", max_length=64, default=None)
    revision: str | None = text_field(
        "Free label of the data's version, e.g. 2026-12. Change it when the studies are refreshed: "
        "the Dataset is verified again (runs refuse studies that differ from the verified content hash).",
        max_length=64,
        default=None,
    )


class Violation(Model):
    """An attribute that breaks the claimed profile: names and counts, never values."""

    keyword: str = Field(max_length=128, description="DICOM keyword, e.g. PatientName.")
    tag: str = Field(max_length=16, description="DICOM tag, e.g. (0010,0010).")
    occurrences: int = Field(ge=0, description="How often the attribute was found.")
    files: int = Field(ge=0, description="In how many files.")


class DatasetStatus(Model):
    """Result of the last de-identification verification."""

    phase: Literal["Pending", "Verifying", "Verified", "Rejected", "Error"] | None = Field(
        default=None, description="Pending, Verifying, Verified, Rejected (identifying data found) or Error."
    )
    verified: bool = Field(default=False, description="True when every file passed the de-identification check.")
    verified_at: datetime | None = Field(default=None, description="When verification finished.")
    content_hash: str | None = Field(default=None, max_length=80, description="sha256 of the verified tree.")
    case_count: int | None = Field(default=None, ge=0, description="Cases (study folders) in the dataset.")
    file_count: int | None = Field(default=None, ge=0, description="DICOM files checked.")
    cohort: dict[str, dict[str, int]] | None = Field(
        default=None,
        description="Case counts by sex, ageBand, manufacturer and modality "
        "(photos: also bodySite and skinType from the cohort sheet; slides: specimenSite and stain from theirs).",
    )
    violations: list[Violation] | None = Field(
        default=None, max_length=200, description="Attributes that broke the profile (names and counts only)."
    )
    conditions: list[Condition] | None = Field(default=None, description="Verified condition with reason.")
    observed_generation: int | None = Field(default=None, description="Generation last verified.")


class Dataset(KubeObject):
    """A de-identified imaging dataset held inside the firewall, with its ground truth kept apart."""

    kind_name: ClassVar[str] = "Dataset"
    plural: ClassVar[str] = "datasets"
    short_names: ClassVar[tuple[str, ...]] = ("lbdata",)
    scope: ClassVar[Literal["Namespaced", "Cluster"]] = "Namespaced"
    printer_columns: ClassVar[tuple[dict[str, Any], ...]] = (
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Verified", "type": "boolean", "jsonPath": ".status.verified"},
        {"name": "Cases", "type": "integer", "jsonPath": ".status.caseCount"},
        {"name": "Modality", "type": "string", "jsonPath": ".spec.modality"},
        {"name": "Hash", "type": "string", "jsonPath": ".status.contentHash", "priority": 1},
        age_column(),
    )

    kind: Literal["Dataset"] = "Dataset"
    spec: DatasetSpec
    status: DatasetStatus | None = None
