"""Small valid API objects for unit tests; each test changes only what it is about."""

from __future__ import annotations

from typing import Any

from lightbox.api import Algorithm, Dataset, SandboxPolicy, Validation

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.vendor.example/radiology/chest-xray:1.2.0@{DIGEST}"


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def algorithm(name: str = "chest", namespace: str = "region", **spec: Any) -> Algorithm:
    base = {
        "vendor": "Acme Imaging",
        "product": "ChestAI",
        "version": "1.2.0",
        "image": IMAGE,
        "task": "classification",
        "modality": "DX",
        "bodyPart": "CHEST",
        "labels": ["normal", "nodule"],
        "positiveLabel": "nodule",
        "resources": {"gpus": 1, "cpu": "2", "memory": "8Gi"},
        "timeoutSeconds": 1800,
    }
    return Algorithm.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": _merge(base, spec)}
    )


CONTENT_HASH = "sha256:" + "00" * 32


def dataset(
    name: str = "chest-2025",
    namespace: str = "region",
    verified: bool = True,
    content_hash: str | None = CONTENT_HASH,
    studies: str = "chest/studies",
    truth: str = "chest/truth",
    **status: Any,
) -> Dataset:
    """A Dataset; ``content_hash=None`` makes one verified without a hash, ``studies``/``truth`` its sub-paths."""
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "studies": {"claimName": "imaging", "subPath": studies},
            "groundTruth": {"claimName": "imaging", "subPath": truth},
        },
    }
    if verified:
        body["status"] = {"phase": "Verified", "verified": True, "contentHash": content_hash, **status}
    elif status:
        body["status"] = status
    return Dataset.model_validate(body)


def policy(name: str = "default", **spec: Any) -> SandboxPolicy:
    base = {"allowedRegistries": ["registry.vendor.example"], "maxGpusPerRun": 2}
    return SandboxPolicy.model_validate({"metadata": {"name": name}, "spec": _merge(base, spec)})


def validation(name: str = "chest-v1", namespace: str = "region", **spec: Any) -> Validation:
    base = {"algorithmRef": {"name": "chest"}, "datasetRef": {"name": "chest-2025"}}
    return Validation.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": _merge(base, spec)}
    )
