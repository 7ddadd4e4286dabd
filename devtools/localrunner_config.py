"""Settings of the development runner (``lightbox local-runner --config FILE``).

DEVELOPMENT ONLY: this configures a stand-in for a kubelet on a machine with no
container runtime. Production clusters run sandbox pods on real nodes.

Example (YAML or JSON)::

    node_name: lightbox-local
    node_labels: {nvidia.com/gpu.present: "true"}
    claims: {lightbox-datasets: /srv/lightbox/datasets}
    images:
      registry.lightbox.test/reference/classifier: [python3, -m, lightbox.sandbox.reference.classifier]
    work_dir: /tmp/lightbox-local-runner
    concurrency: 1
    keep_workdirs: false
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_NODE_NAME = "lightbox-local"


def default_commands() -> dict[str, list[str]]:
    """Commands the trusted image provides, mapped to this interpreter so the
    steps run from the same (editable) install as the runner."""
    return {
        "lightbox": [sys.executable, "-m", "lightbox"],
        "python": [sys.executable],
        "python3": [sys.executable],
    }


class RunnerConfig(BaseModel):
    """Everything the development runner needs to pretend to be a node."""

    model_config = ConfigDict(extra="forbid")

    node_name: str = Field(default=DEFAULT_NODE_NAME, min_length=1, max_length=253)
    node_labels: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="Extra labels, so policies' nodeSelectors match the one local node.",
    )
    node_capacity: dict[str, str] = Field(
        default_factory=lambda: {
            "cpu": "8",
            "memory": "64Gi",
            "pods": "110",
            "ephemeral-storage": "200Gi",
            "nvidia.com/gpu": "8",
        },
        description="Reported as both capacity and allocatable.",
    )
    node_taints: list[dict[str, Any]] = Field(default_factory=list)
    host_ip: str = "127.0.0.1"
    claims: dict[str, Path] = Field(
        default_factory=dict,
        description="PersistentVolumeClaim name (or 'namespace/name') -> host directory.",
    )
    images: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Image repository (or full reference) -> argv prefix of its entry point; "
        "any other image fails like an image pull.",
    )
    development_images: bool = Field(
        default=True,
        description="Also map the operator's trusted image and the reference algorithms (see development_images()).",
    )
    commands: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Executable name -> argv prefix, on top of default_commands() (lightbox, python).",
    )
    pass_env: list[str] = Field(
        default_factory=lambda: ["PATH", "LANG", "LC_ALL", "TZ"],
        description="Host variables every container inherits, standing in for the image's ENV.",
    )
    work_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "lightbox-local-runner")
    concurrency: int = Field(default=1, ge=1, le=32)
    keep_workdirs: bool = False
    container_timeout_seconds: float = Field(default=6 * 3600, gt=0)
    max_output_bytes: int = Field(default=1 << 20, ge=4096)
    heartbeat_seconds: float = Field(default=10, gt=0)
    watch_seconds: int = Field(default=5, ge=1, description="Watch window; the pod list is re-read after each.")
    image_pull_backoff_seconds: float = Field(
        default=1.0, ge=0, description="How long a pod shows ErrImagePull before it is failed."
    )
    delete_node_on_exit: bool = False

    def all_commands(self) -> dict[str, list[str]]:
        return default_commands() | self.commands

    def all_images(self) -> dict[str, list[str]]:
        return (development_images() if self.development_images else {}) | self.images


def load_config(path: Path | str | None) -> RunnerConfig:
    """Read a YAML or JSON file (JSON is valid YAML); no file means defaults."""
    if path is None:
        return RunnerConfig()
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    return RunnerConfig.model_validate(data or {})


def development_images(
    trusted_image: str | None = None,
    reference_registry: str = "registry.lightbox.test/reference",
) -> dict[str, list[str]]:
    """The images a local demo needs: the trusted image runs ``lightbox`` steps,
    the reference algorithms run from this install. Any other image 'fails to pull'."""
    if trusted_image is None:
        from lightbox.operator.config import DEFAULT_TRUSTED_IMAGE

        trusted_image = DEFAULT_TRUSTED_IMAGE
    from lightbox.devtools.localrunner_spec import image_repository

    reference = "lightbox.sandbox.reference"
    return {
        image_repository(trusted_image): [sys.executable, "-m", "lightbox"],
        **{
            f"{reference_registry}/{name}": [sys.executable, "-m", f"{reference}.{name}"]
            for name in ("classifier", "segmenter", "misbehave")
        },
    }
