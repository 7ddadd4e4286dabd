"""Valid manifests of every kind, and the ways users get them wrong.

Each invalid case is (id, kind, change to the valid manifest, text the API
server's rejection must contain): the field's path and what is allowed.
"""

from __future__ import annotations

import copy
from typing import Any

DIGEST = "sha256:" + "0123456789abcdef" * 4


def algorithm() -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "Algorithm",
        "metadata": {"name": "chest-ai"},
        "spec": {
            "vendor": "Acme Imaging",
            "product": "ChestAI",
            "version": "1.2.0",
            "image": f"registry.vendor.example/radiology/chest-ai:1.2.0@{DIGEST}",
            "task": "classification",
            "modality": "DX",
            "bodyPart": "CHEST",
            "labels": ["normal", "nodule"],
            "positiveLabel": "nodule",
            "resources": {"gpus": 1, "cpu": "2", "memory": "8Gi"},
            "timeoutSeconds": 1800,
            "regulatory": {"ceClass": "IIa", "udi": "(01)05060000000001", "intendedUse": "Triage of chest X-rays."},
        },
    }


def dataset() -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "chest-2025"},
        "spec": {
            "studies": {"claimName": "imaging", "subPath": "chest/studies"},
            "groundTruth": {"claimName": "imaging-truth", "subPath": "chest"},
            "deidentification": {"profile": "basic", "options": ["retainPatientCharacteristics"]},
            "modality": "DX",
        },
    }


def validation() -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "Validation",
        "metadata": {"name": "chest-ai-on-2025"},
        "spec": {
            "algorithmRef": {"name": "chest-ai"},
            "datasetRef": {"name": "chest-2025"},
            "metrics": ["auc", "sensitivity", "specificity"],
            "acceptance": [{"metric": "auc", "comparison": ">=", "threshold": 0.85, "bound": "lower"}],
            "schedule": "0 3 * * 1",
            "historyLimit": 5,
        },
    }


def policy() -> dict[str, Any]:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "SandboxPolicy",
        "metadata": {"name": "region-default"},
        "spec": {
            "allowedRegistries": ["registry.vendor.example", "localhost:5000/lightbox"],
            "maxGpusPerRun": 2,
            "runtimeClassName": "gvisor",
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "minSubgroupSize": 10,
        },
    }


def audit_record() -> dict[str, Any]:
    from lightbox.auditchain import seal

    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "AuditRecord",
        "metadata": {"name": "0a1b2c3d-0000-4000-8000-000000000000-1"},
        "spec": seal({
            "event": "RunFinished",
            "chain": {"id": "0a1b2c3d-0000-4000-8000-000000000000", "sequence": 1},
            "recordedAt": "2026-11-02T03:04:00Z",
            "validation": {"name": "chest-ai-on-2025", "uid": "0a1b2c3d-0000-4000-8000-000000000000"},
            "run": {
                "name": "chest-ai-on-2025-r1", "number": 1, "phase": "Succeeded", "reason": "Succeeded",
                "metrics": {"auc": {"value": 0.91, "lower": 0.86, "upper": 0.95, "method": "delong"}}, "verdict": "Passed",
            },
            "algorithm": {"name": "chest-ai", "vendor": "Acme Imaging", "version": "1.2.0"},
            "dataset": {"name": "chest-2025", "contentHash": "sha256:" + "00" * 32},
            "recordedBy": "lightbox-operator/0.1.0",
        }),
    }


VALID = {
    "Algorithm": algorithm, "Dataset": dataset, "Validation": validation, "SandboxPolicy": policy, "AuditRecord": audit_record,
}


def _set(manifest: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path under the manifest; the value DELETE removes the key."""
    *parents, leaf = path.split(".")
    node = manifest
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[leaf]
    elif isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value


DELETE = object()

INVALID: list[tuple[str, str, dict[str, Any], str]] = [
    # Algorithm
    ("image-without-digest", "Algorithm", {"spec.image": "registry.vendor.example/radiology/chest-ai:1.2.0"}, "pinned by digest"),
    ("image-without-registry", "Algorithm", {"spec.image": f"acme/chest-ai@{DIGEST}"}, "must name a registry host"),
    ("image-short-digest", "Algorithm", {"spec.image": "registry.vendor.example/chest-ai@sha256:abc"}, "spec.image"),
    ("negative-gpus", "Algorithm", {"spec.resources.gpus": -1}, "spec.resources.gpus: Invalid value: -1: spec.resources.gpus in body should be greater than or equal to 0"),
    ("absurd-gpus", "Algorithm", {"spec.resources.gpus": 64}, "spec.resources.gpus in body should be less than or equal to 16"),
    ("unknown-task", "Algorithm", {"spec.task": "regression"}, 'spec.task: Unsupported value: "regression": supported values: "classification", "detection", "segmentation"'),
    ("unknown-modality", "Algorithm", {"spec.modality": "XRAY"}, 'spec.modality: Unsupported value: "XRAY"'),
    ("one-label-classifier", "Algorithm", {"spec.labels": ["nodule"]}, "classification algorithms must list at least two labels"),
    ("positive-label-not-a-label", "Algorithm", {"spec.positiveLabel": "mass"}, "positiveLabel must be one of labels"),
    ("memory-not-a-quantity", "Algorithm", {"spec.resources.memory": "lots"}, "spec.resources.memory: Invalid value: \"string\": must be a Kubernetes quantity"),
    ("memory-too-large", "Algorithm", {"spec.resources.memory": "4Ti"}, "must be at most 512Gi"),
    ("timeout-too-short", "Algorithm", {"spec.timeoutSeconds": 5}, "spec.timeoutSeconds in body should be greater than or equal to 60"),
    ("missing-vendor", "Algorithm", {"spec.vendor": DELETE}, 'spec.vendor: Required value'),
    ("threshold-above-one", "Algorithm", {"spec.operatingThreshold": 1.5}, "spec.operatingThreshold in body should be less than or equal to 1"),
    ("unknown-ce-class", "Algorithm", {"spec.regulatory.ceClass": "IV"}, 'spec.regulatory.ceClass: Unsupported value: "IV"'),
    ("unknown-field", "Algorithm", {"spec.gpu": 1}, 'unknown field "spec.gpu"'),
    # Dataset
    ("truth-same-as-studies", "Dataset", {"spec.groundTruth": {"claimName": "imaging", "subPath": "chest/studies"}}, "groundTruth must not overlap studies"),
    ("truth-inside-studies", "Dataset", {"spec.groundTruth": {"claimName": "imaging", "subPath": "chest/studies/truth"}}, "groundTruth must not overlap studies"),
    ("sub-path-escapes", "Dataset", {"spec.studies.subPath": "../other-region"}, "spec.studies.subPath: Invalid value: \"string\": must be a relative path without '..' segments"),
    ("absolute-sub-path", "Dataset", {"spec.studies.subPath": "/etc"}, "must be a relative path"),
    ("unknown-deid-option", "Dataset", {"spec.deidentification.options": ["retainEverything"]}, 'spec.deidentification.options[0]: Unsupported value: "retainEverything"'),
    ("missing-studies", "Dataset", {"spec.studies": DELETE}, "spec.studies: Required value"),
    ("bad-claim-name", "Dataset", {"spec.studies.claimName": "Imaging_PVC"}, "spec.studies.claimName in body should match"),
    # Validation
    ("auc-threshold-above-one", "Validation", {"spec.acceptance.0.threshold": 1.5}, "spec.acceptance[0].threshold: Invalid value: \"object\": threshold must be between 0 and 1"),
    ("negative-hd95", "Validation", {"spec.metrics": ["hd95"], "spec.acceptance": [{"metric": "hd95", "comparison": "<=", "threshold": -2}]}, "threshold for hd95 is a distance in millimetres and must not be negative"),
    ("unknown-metric", "Validation", {"spec.metrics": ["accuracy"]}, 'spec.metrics[0]: Unsupported value: "accuracy"'),
    ("schedule-not-cron", "Validation", {"spec.schedule": "every monday"}, "spec.schedule: Invalid value: \"string\": must be a cron expression with 5 fields"),
    ("schedule-six-fields", "Validation", {"spec.schedule": "0 0 3 * * 1"}, "must be a cron expression"),
    ("missing-algorithm-ref", "Validation", {"spec.algorithmRef": DELETE}, "spec.algorithmRef: Required value"),
    ("criterion-metric-not-computed", "Validation", {"spec.metrics": ["sensitivity"]}, "every acceptance criterion's metric must also be listed in metrics"),
    ("history-limit-zero", "Validation", {"spec.historyLimit": 0}, "spec.historyLimit in body should be greater than or equal to 1"),
    ("unknown-comparison", "Validation", {"spec.acceptance.0.comparison": "=="}, 'spec.acceptance[0].comparison: Unsupported value: "=="'),
    ("unknown-bound", "Validation", {"spec.acceptance.0.bound": "median"}, 'spec.acceptance[0].bound: Unsupported value: "median"'),
    # SandboxPolicy
    ("no-registries", "SandboxPolicy", {"spec.allowedRegistries": []}, "spec.allowedRegistries in body should have at least 1 items"),
    ("registry-not-a-host", "SandboxPolicy", {"spec.allowedRegistries": ["docker hub"]}, "must be a registry host"),
    ("tiny-subgroups", "SandboxPolicy", {"spec.minSubgroupSize": 2}, "spec.minSubgroupSize in body should be greater than or equal to 5"),
    ("max-memory-not-quantity", "SandboxPolicy", {"spec.maxMemory": "big"}, "spec.maxMemory: Invalid value: \"string\": must be a Kubernetes quantity"),
    ("unknown-toleration-operator", "SandboxPolicy", {"spec.tolerations.0.operator": "Matches"}, 'spec.tolerations[0].operator: Unsupported value: "Matches"'),
    ("bad-runtime-class", "SandboxPolicy", {"spec.runtimeClassName": "gVisor!"}, "spec.runtimeClassName in body should match"),
]


def invalid_manifest(kind: str, changes: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(VALID[kind]())
    for path, value in changes.items():
        _set(manifest, path, value)
    return manifest
