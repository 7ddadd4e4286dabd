"""Vendor contract v1: what an algorithm container reads, writes and declares.

The pydantic models here are the source of truth; the JSON Schemas shipped next to this
module (``schema-v1-*.json``) are generated from them (``python -m lightbox.sandbox.contract``)
and a test fails when they drift. docs/vendor-contract.md explains the contract in prose.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError

from lightbox.api.results import Model
from lightbox.api.run import Task

CONTRACT_VERSION = "v1"

# Environment the vendor container receives (and nothing else from Lightbox).
CONTRACT_VERSION_ENV = "LIGHTBOX_CONTRACT_VERSION"
TASK_ENV = "LIGHTBOX_TASK"
LABELS_ENV = "LIGHTBOX_LABELS"  # JSON list, same as the manifest's labels



def vendor_environment(task: str, labels: list[str], input_dir: str, output_dir: str) -> dict[str, str]:
    """Everything Lightbox sets in the vendor container, in a run pod and in ``vendor check`` alike.

    The output directory is the only writable place (the root file system is
    read-only), so HOME and TMPDIR point there; the scorer reads only
    predictions.json and the masks it names.
    """
    from lightbox.api.run import INPUT_DIR_ENV, OUTPUT_DIR_ENV

    return {
        INPUT_DIR_ENV: input_dir,
        OUTPUT_DIR_ENV: output_dir,
        CONTRACT_VERSION_ENV: CONTRACT_VERSION,
        TASK_ENV: task,
        LABELS_ENV: json.dumps(labels),
        "HOME": output_dir,
        "TMPDIR": output_dir,
    }


# Where an image declares itself, like MONAI MAP's app.json/pkg.json.
ALGORITHM_MANIFEST_PATH = "/opt/lightbox/algorithm.json"

# Limits enforced on a run (vendor check enforces the same, scaled to the sample).
MAX_PREDICTIONS_BYTES = 64 << 20
MAX_FINDINGS_PER_CASE = 1000
MAX_LABELS = 64

# Vendor exit codes: 0 means predictions.json is complete for the cases it could process;
# anything else is a failed run (no partial scoring of a crashed algorithm).
VENDOR_EXIT_OK = 0

CaseId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._/+-]*$")]
RelativePath = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
    ),
]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


# --- /input/manifest.json -------------------------------------------------------------


class InputSeries(Model):
    series_instance_uid: str = Field(max_length=64, description="SeriesInstanceUID of the series.")
    modality: str = Field(max_length=16, description="DICOM Modality.")
    files: list[RelativePath] = Field(
        description="DICOM files relative to the input directory, in slice order (InstanceNumber); "
        "a segmentation mask's first axis follows this order."
    )
    rows: int = Field(ge=1, description="Rows of every image in the series.")
    columns: int = Field(ge=1, description="Columns of every image in the series.")


class SlideLevel(Model):
    width: int = Field(ge=1, description="Columns of this level, in pixels.")
    height: int = Field(ge=1, description="Rows of this level, in pixels.")
    downsample: float = Field(ge=1, description="Baseline width divided by this level's width.")
    tile_width: int = Field(ge=1, description="Columns of each stored tile.")
    tile_height: int = Field(ge=1, description="Rows of each stored tile.")


class InputSlide(Model):
    """A whole-slide image: where it is and its pyramid, read from the file's tags (not decoded)."""

    file: RelativePath = Field(description="The slide file relative to the input directory (also the series' file).")
    format: Literal["svs", "tiff"] = Field(description="Aperio SVS or generic pyramidal TIFF.")
    levels: list[SlideLevel] = Field(min_length=1, description="Tiled levels, baseline first, in file order.")
    mpp: float | None = Field(
        default=None, gt=0, description="Micrometres per pixel at the baseline, when the scanner said."
    )
    objective_power: float | None = Field(
        default=None, gt=0, description="Scanning objective (Aperio AppMag), when known."
    )
    mask_level: int = Field(
        ge=0, description="Index into levels of the grid a segmentation mask covers (the smallest level): "
        "a mask is shaped (1, that level's height, width)."
    )


class InputCase(Model):
    id: CaseId = Field(description="Pseudonymous case id, assigned per run.")
    series: list[InputSeries] = Field(min_length=1)
    slides: list[InputSlide] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Whole-slide images (datasets of format slide-tiff): one per series, same order.",
    )


class InputManifest(Model):
    """``/input/manifest.json``: the cases of this run."""

    contract_version: Literal["v1"] = "v1"
    task: Task
    labels: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    cases: list[InputCase]


# --- /output/predictions.json ----------------------------------------------------------


class ClassificationCase(Model):
    scores: dict[Label, Probability] = Field(
        min_length=1, max_length=MAX_LABELS, description="Probability per label, each in [0, 1]."
    )


class Location(Model):
    x: float = Field(ge=0, allow_inf_nan=False, description="Column, in pixels, from the left edge.")
    y: float = Field(ge=0, allow_inf_nan=False, description="Row, in pixels, from the top edge.")
    slice: int = Field(default=0, ge=0, description="Index into the series' files list.")


class Finding(Model):
    location: Location
    score: Probability
    label: Label | None = Field(default=None, description="One of the manifest's labels, if there are several.")


class DetectionCase(Model):
    findings: list[Finding] = Field(max_length=MAX_FINDINGS_PER_CASE)


class SegmentationCase(Model):
    mask: RelativePath = Field(
        description="Mask file relative to the output directory: .npz with one array 'mask' "
        "shaped (slices, rows, columns), non-zero = structure; or a DICOM SEG (.dcm) whose frames "
        "name their source images."
    )


class ClassificationPredictions(Model):
    contract_version: Literal["v1"] = "v1"
    task: Literal["classification"]
    cases: dict[CaseId, ClassificationCase]


class DetectionPredictions(Model):
    contract_version: Literal["v1"] = "v1"
    task: Literal["detection"]
    cases: dict[CaseId, DetectionCase]


class SegmentationPredictions(Model):
    contract_version: Literal["v1"] = "v1"
    task: Literal["segmentation"]
    cases: dict[CaseId, SegmentationCase]


Predictions = Annotated[
    ClassificationPredictions | DetectionPredictions | SegmentationPredictions, Field(discriminator="task")
]
PREDICTIONS = TypeAdapter(Predictions)
CASE_MODELS: dict[str, type[Model]] = {
    "classification": ClassificationCase,
    "detection": DetectionCase,
    "segmentation": SegmentationCase,
}


# --- the image's /opt/lightbox/algorithm.json ------------------------------------------


class ManifestResources(Model):
    cpu: str = Field(default="1", pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="Minimum CPU, e.g. 2 or 500m.")
    memory: str = Field(default="1Gi", pattern=r"^[0-9]+(\.[0-9]+)?([KMGTE]i?)?$", description="Minimum memory.")
    gpus: int = Field(default=0, ge=0, le=16)
    seconds_per_case: float = Field(default=60, gt=0, description="Expected wall time per case.")


class AlgorithmManifest(Model):
    """Declared by the image at ``/opt/lightbox/algorithm.json``."""

    contract_version: Literal["v1"] = "v1"
    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    task: Task
    modality: str | None = Field(default=None, max_length=16)
    labels: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    positive_label: Label | None = None
    command: list[str] | None = Field(default=None, description="Entrypoint, if not the image's default.")
    resources: ManifestResources = Field(default_factory=ManifestResources)


_SUFFIX = {
    "": 1,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Ei": 2**60,
}


def parse_quantity(text: str | int | float) -> float:
    """Kubernetes quantity -> number (cores for cpu, bytes for memory)."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|[KMGTE]i?)?", text.strip())
    if not m:
        raise ValueError(f"not a quantity: {text!r}")
    value, suffix = float(m.group(1)), m.group(2) or ""
    return value / 1000 if suffix == "m" else value * _SUFFIX[suffix]


def check_algorithm_spec(spec: Mapping[str, Any], manifest: AlgorithmManifest | Mapping[str, Any]) -> list[str]:
    """Problems with an Algorithm resource's spec (camelCase dict) given the image's manifest.

    Empty list = consistent. The messages name fields and declared values of the vendor's own
    manifest, which is not patient data.
    """
    man = manifest if isinstance(manifest, AlgorithmManifest) else AlgorithmManifest.model_validate(manifest)
    problems: list[str] = []
    if spec.get("contractVersion", "v1") != man.contract_version:
        problems.append(
            f"spec.contractVersion is {spec.get('contractVersion')!r}; the image implements {man.contract_version!r}"
        )
    if spec.get("task") != man.task:
        problems.append(f"spec.task is {spec.get('task')!r}; the image declares {man.task!r}")
    if man.modality and spec.get("modality") and spec["modality"] != man.modality:
        problems.append(f"spec.modality is {spec['modality']!r}; the image declares {man.modality!r}")
    spec_labels = list(spec.get("labels") or [])
    if man.labels and sorted(spec_labels) != sorted(man.labels):
        problems.append(f"spec.labels {sorted(spec_labels)} differ from the image's labels {sorted(man.labels)}")
    positive = spec.get("positiveLabel")
    if man.positive_label and positive and positive != man.positive_label:
        problems.append(f"spec.positiveLabel is {positive!r}; the image declares {man.positive_label!r}")
    res = spec.get("resources") or {}
    for key, need in (("cpu", man.resources.cpu), ("memory", man.resources.memory)):
        have = res.get(key)
        if have is None:
            continue
        try:
            if parse_quantity(have) < parse_quantity(need):
                problems.append(f"spec.resources.{key} {have} is below the image's minimum {need}")
        except ValueError as exc:
            problems.append(f"spec.resources.{key}: {exc}")
    if int(res.get("gpus", 0) or 0) < man.resources.gpus:
        problems.append(f"spec.resources.gpus {res.get('gpus', 0)} is below the image's {man.resources.gpus}")
    return problems


# --- validation with messages a vendor can act on --------------------------------------


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in CASE_MODELS)]
    return ".".join(parts) or "(top level)"


def describe_errors(exc: ValidationError, limit: int = 20) -> list[str]:
    """One line per error: where, and what was expected (never the offending value)."""
    lines = [f"{_loc(e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)[:limit]]
    if exc.error_count() > limit:
        lines.append(f"... and {exc.error_count() - limit} more")
    return lines


def validate_predictions(
    data: Any,
) -> tuple[ClassificationPredictions | DetectionPredictions | SegmentationPredictions | None, list[str]]:
    try:
        return PREDICTIONS.validate_python(data), []
    except ValidationError as exc:
        return None, describe_errors(exc)


def is_probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


# --- shipped JSON Schemas ---------------------------------------------------------------

SCHEMA_DIR = Path(__file__).resolve().parent
SCHEMA_FILES: dict[str, Any] = {
    "schema-v1-input-manifest.json": InputManifest,
    "schema-v1-predictions.json": PREDICTIONS,
    "schema-v1-algorithm-manifest.json": AlgorithmManifest,
}


def generated_schema(name: str) -> dict[str, Any]:
    target = SCHEMA_FILES[name]
    schema = (
        target.json_schema(by_alias=True)
        if isinstance(target, TypeAdapter)
        else target.model_json_schema(by_alias=True)
    )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://lightbox.dev/contract/{name}"
    return schema


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text())


def write_schemas(directory: Path = SCHEMA_DIR) -> None:
    for name in SCHEMA_FILES:
        (directory / name).write_text(json.dumps(generated_schema(name), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR)
