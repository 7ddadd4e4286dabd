"""The layout of one sandbox run pod, shared by the pod builder, the trusted
steps that run inside it, and the development runner that executes it locally.

One pod per run, three containers in order:

1. ``stage`` (init container, trusted image): reads the dataset's studies from
   ``STUDIES_DIR`` (read-only), verifies de-identification, and writes the
   vendor's ``INPUT_DIR`` (``manifest.json`` + DICOM files) plus ``WORK_DIR/cases.json``
   (case -> pseudonymous patient id and subgroup attributes, for the scorer only).
2. ``vendor`` (init container, the algorithm's image): sees only ``INPUT_DIR``
   (read-only) and ``OUTPUT_DIR`` (writable); no network, no token.
3. ``score`` (main container, trusted image): reads ``OUTPUT_DIR/predictions.json``,
   ``TRUTH_DIR`` (the ground truth, mounted only here) and ``WORK_DIR/cases.json``;
   writes a ``ScoreReport`` to its termination message and the full result to
   ``WORK_DIR/results.json``.

Each trusted step reads its settings from one JSON environment variable so the
operator renders them from the same models the steps parse.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightbox.api.results import MetricName, Model

# Container names, in execution order.
STAGE_CONTAINER = "stage"
VENDOR_CONTAINER = "vendor"
SCORE_CONTAINER = "score"

# Volume names and where they are mounted.
STUDIES_VOLUME, STUDIES_DIR = "studies", "/data/studies"
TRUTH_VOLUME, TRUTH_DIR = "truth", "/data/truth"
INPUT_VOLUME, INPUT_DIR = "input", "/input"
OUTPUT_VOLUME, OUTPUT_DIR = "output", "/output"
WORK_VOLUME, WORK_DIR = "work", "/work"
TMP_VOLUME, TMP_DIR = "tmp", "/tmp"

MANIFEST_FILE = "manifest.json"
PREDICTIONS_FILE = "predictions.json"
CASES_FILE = "cases.json"
RESULTS_FILE = "results.json"

# Every step finds its directories through these variables (defaulting to the
# paths above), so the development runner can point them at host folders.
STUDIES_DIR_ENV = "LIGHTBOX_STUDIES_DIR"
TRUTH_DIR_ENV = "LIGHTBOX_TRUTH_DIR"
INPUT_DIR_ENV = "LIGHTBOX_INPUT_DIR"
OUTPUT_DIR_ENV = "LIGHTBOX_OUTPUT_DIR"
WORK_DIR_ENV = "LIGHTBOX_WORK_DIR"
# Where a trusted step writes its termination message (Kubernetes' default path).
TERMINATION_LOG_ENV = "LIGHTBOX_TERMINATION_LOG"
TERMINATION_LOG_PATH = "/dev/termination-log"

STAGER_CONFIG_ENV = "LIGHTBOX_STAGER_CONFIG"
# The stage step's in-pod isolation check (IsolationCheckConfig JSON) and the node's
# address, which the pod learns from the downward API (status.hostIP).
ISOLATION_CHECK_ENV = "LIGHTBOX_ISOLATION_CHECK"
NODE_IP_ENV = "LIGHTBOX_NODE_IP"
# The NVIDIA container toolkit picks a container's GPUs from this variable when it
# trusts the environment; see docs/gpus.md.
NVIDIA_VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
SCORER_CONFIG_ENV = "LIGHTBOX_SCORER_CONFIG"

# Labels and annotations on every object of a run.
GROUP = "lightbox.dev"
LABEL_RUN = f"{GROUP}/run"
LABEL_VALIDATION = f"{GROUP}/validation"
LABEL_COMPONENT = f"{GROUP}/component"  # "run" or "isolation-probe"
ANNOTATION_RUN_NUMBER = f"{GROUP}/run-number"

# Exit codes of the trusted steps, so the operator can name a failure precisely.
EXIT_OK = 0
EXIT_PHI_FOUND = 3  # stage: de-identification check failed
EXIT_DATASET_UNREADABLE = 4  # stage: studies missing or not DICOM
EXIT_MALFORMED_PREDICTIONS = 5  # score: predictions.json missing, not JSON, or not to schema
EXIT_GROUND_TRUTH_UNREADABLE = 6  # score: ground truth missing or malformed
EXIT_DATASET_CHANGED = 7  # stage: the studies differ from what the Dataset's verification saw
EXIT_ISOLATION_NOT_ENFORCED = 8  # stage: the network answered (or GPUs showed) inside the run pod

DeidOption = Literal[
    "retainSafePrivate",
    "retainUIDs",
    "retainDeviceIdentity",
    "retainInstitutionIdentity",
    "retainPatientCharacteristics",
    "retainLongitudinalFullDates",
    "retainLongitudinalModifiedDates",
    "cleanDescriptors",
    "cleanStructuredContent",
    "cleanGraphics",
]
"""PS3.15 Annex E profile options, named after the columns of Table E.1-1."""

Task = Literal["classification", "detection", "segmentation"]
# How the vendor's container expects its input and writes its output (docs/packaging.md).
Packaging = Literal["lightbox", "monai-map", "grand-challenge"]
# One folder per case whatever the format; the format picks the de-identification path.
DatasetFormat = Literal["dicom", "slide-tiff", "photo"]
# bodySite and skinType (Fitzpatrick) come from the site's cohort sheet for photos: fairness across
# skin types is the known risk in dermatology. specimenSite and stain come from a slide dataset's
# sheet: stain (with the scanner, manufacturer) is pathology's known domain shift.
SubgroupDimension = Literal["sex", "ageBand", "manufacturer", "site", "bodySite", "skinType", "specimenSite", "stain"]


class StagerConfig(Model):
    """Settings of the ``stage`` step (env ``LIGHTBOX_STAGER_CONFIG``)."""

    task: Task = Field(description="The algorithm's task, written into the vendor's manifest.json.")
    packaging: Packaging = Field(default="lightbox", description="How the vendor expects its input laid out.")
    format: DatasetFormat = Field(default="dicom", description="How the dataset's studies are stored.")
    labels: list[str] = Field(default_factory=list, description="The algorithm's labels, for manifest.json.")
    deid_options: list[DeidOption] = Field(default_factory=list, description="Profile options the dataset claims.")
    max_cases: int | None = Field(default=None, ge=1, description="Stage at most this many cases.")
    verified_content_hash: str | None = Field(
        default=None, max_length=80, description="The Dataset's verified content hash; the studies must still match it."
    )


class BootstrapSettings(Model):
    resamples: int = Field(default=2000, ge=200, le=100000, description="Bootstrap resamples.")
    seed: int = Field(default=0, ge=0, description="Random seed, so a run can be reproduced.")
    level: Literal["case", "patient"] = Field(default="patient", description="Resample cases or whole patients.")


class ScorerConfig(Model):
    """Settings of the ``score`` step (env ``LIGHTBOX_SCORER_CONFIG``)."""

    task: Task
    packaging: Packaging = Field(default="lightbox", description="How the vendor writes its output.")
    labels: list[str] = Field(default_factory=list, description="Class labels; the first positive label is scored.")
    positive_label: str | None = Field(default=None, description="Label treated as positive in binary metrics.")
    operating_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Score at or above which a case is positive."
    )
    metrics: list[MetricName] = Field(
        default_factory=list, description="Metrics to compute; empty means the task's defaults."
    )
    subgroups: list[SubgroupDimension] = Field(default_factory=list, description="Subgroup dimensions to report.")
    min_subgroup_size: int = Field(default=10, ge=1, description="Smaller subgroups are suppressed.")
    pooled_evidence: bool = Field(
        default=False, description="Report the pooling evidence (the policy's pooledEvidence)."
    )
    confidence_level: float = Field(default=0.95, gt=0, lt=1)
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    froc_false_positives: list[float] = Field(default_factory=lambda: [0.125, 0.25, 0.5, 1, 2, 4, 8])


class IsolationCheckConfig(Model):
    """Settings of the in-pod isolation check that opens the ``stage`` step (env ``LIGHTBOX_ISOLATION_CHECK``).

    The targets come from here and from the pod itself: ``KUBERNETES_SERVICE_HOST``/``PORT``
    (set by every kubelet), ``LIGHTBOX_NODE_IP`` (downward API) and the default gateway of
    ``/proc/net/route``. See docs/isolation.md for why the check waits and when it refuses.
    """

    api_server: str | None = Field(
        default=None, max_length=512, description="The API server endpoint the operator uses (host:port or URL)."
    )
    dns: list[str] = Field(default_factory=list, max_length=8, description="Cluster DNS servers (host[:port]).")
    outside: list[str] = Field(
        default_factory=list, max_length=8, description="Addresses outside the cluster that listen (host[:port])."
    )
    timeout_seconds: float = Field(
        default=1.0, gt=0, le=10, description="Seconds each connection attempt waits for an answer."
    )
    clean_rounds: int = Field(
        default=3, ge=1, le=20, description="Consecutive rounds in which every target must be silent."
    )
    interval_seconds: float = Field(default=1.0, ge=0, le=30, description="Pause between rounds.")
    bound_seconds: float = Field(default=30.0, gt=0, le=600, description="Refuse if the rounds are not clean by then.")
    gpus_allowed: int = Field(
        default=0, ge=0, le=64, description="GPUs this (trusted) container may see; it requests none."
    )
