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
        "spec": seal(
            {
                "event": "RunFinished",
                "chain": {"id": "0a1b2c3d-0000-4000-8000-000000000000", "sequence": 1},
                "recordedAt": "2026-11-02T03:04:00Z",
                "validation": {"name": "chest-ai-on-2025", "uid": "0a1b2c3d-0000-4000-8000-000000000000"},
                "run": {
                    "name": "chest-ai-on-2025-r1",
                    "number": 1,
                    "phase": "Succeeded",
                    "reason": "Succeeded",
                    "metrics": {"auc": {"value": 0.91, "lower": 0.86, "upper": 0.95, "method": "delong"}},
                    "verdict": "Passed",
                },
                "algorithm": {"name": "chest-ai", "vendor": "Acme Imaging", "version": "1.2.0"},
                "dataset": {"name": "chest-2025", "contentHash": "sha256:" + "00" * 32},
                "recordedBy": "lightbox-operator/0.1.0",
            }
        ),
    }


VALID = {
    "Algorithm": algorithm,
    "Dataset": dataset,
    "Validation": validation,
    "SandboxPolicy": policy,
    "AuditRecord": audit_record,
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
    (
        "image-without-digest",
        "Algorithm",
        {"spec.image": "registry.vendor.example/radiology/chest-ai:1.2.0"},
        "pinned by digest",
    ),
    ("image-without-registry", "Algorithm", {"spec.image": f"acme/chest-ai@{DIGEST}"}, "must name a registry host"),
    (
        "image-short-digest",
        "Algorithm",
        {"spec.image": "registry.vendor.example/chest-ai@sha256:abc"},
        'spec.image: Invalid value: "string": the digest is too short: it must have 64 lowercase hex digits after '
        'sha256:',
    ),
    (
        "negative-gpus",
        "Algorithm",
        {"spec.resources.gpus": -1},
        "spec.resources.gpus: Invalid value: -1: spec.resources.gpus in body should be greater than or equal to 0",
    ),
    (
        "absurd-gpus",
        "Algorithm",
        {"spec.resources.gpus": 64},
        "spec.resources.gpus in body should be less than or equal to 16",
    ),
    (
        "unknown-task",
        "Algorithm",
        {"spec.task": "regression"},
        'spec.task: Unsupported value: "regression": supported values: "classification", "detection", "segmentation"',
    ),
    ("unknown-modality", "Algorithm", {"spec.modality": "XRAY"}, 'spec.modality: Unsupported value: "XRAY"'),
    (
        "one-label-classifier",
        "Algorithm",
        {"spec.labels": ["nodule"]},
        "classification algorithms must list at least two labels: only one is listed",
    ),
    ("positive-label-not-a-label", "Algorithm", {"spec.positiveLabel": "mass"}, "positiveLabel must be one of labels"),
    (
        "memory-not-a-quantity",
        "Algorithm",
        {"spec.resources.memory": "lots"},
        'spec.resources.memory: Invalid value: "string": must be a Kubernetes quantity',
    ),
    ("memory-too-large", "Algorithm", {"spec.resources.memory": "4Ti"}, "must be at most 512Gi, not 4Ti"),
    (
        "timeout-too-short",
        "Algorithm",
        {"spec.timeoutSeconds": 5},
        "spec.timeoutSeconds in body should be greater than or equal to 60",
    ),
    ("missing-vendor", "Algorithm", {"spec.vendor": DELETE}, "spec.vendor: Required value"),
    (
        "threshold-above-one",
        "Algorithm",
        {"spec.operatingThreshold": 1.5},
        "spec.operatingThreshold in body should be less than or equal to 1",
    ),
    (
        "unknown-ce-class",
        "Algorithm",
        {"spec.regulatory.ceClass": "IV"},
        'spec.regulatory.ceClass: Unsupported value: "IV"',
    ),
    ("unknown-field", "Algorithm", {"spec.gpu": 1}, 'unknown field "spec.gpu"'),
    # Dataset
    (
        "truth-same-as-studies",
        "Dataset",
        {"spec.groundTruth": {"claimName": "imaging", "subPath": "chest/studies"}},
        "groundTruth must not overlap studies",
    ),
    (
        "truth-inside-studies",
        "Dataset",
        {"spec.groundTruth": {"claimName": "imaging", "subPath": "chest/studies/truth"}},
        "groundTruth must not overlap studies",
    ),
    (
        "sub-path-escapes",
        "Dataset",
        {"spec.studies.subPath": "../other-region"},
        "spec.studies.subPath: Invalid value: \"string\": must be a relative path without '.' or '..' segments",
    ),
    ("absolute-sub-path", "Dataset", {"spec.studies.subPath": "/etc"}, "must be a relative path"),
    (
        "unknown-deid-option",
        "Dataset",
        {"spec.deidentification.options": ["retainEverything"]},
        'spec.deidentification.options[0]: Unsupported value: "retainEverything"',
    ),
    ("missing-studies", "Dataset", {"spec.studies": DELETE}, "spec.studies: Required value"),
    (
        "bad-claim-name",
        "Dataset",
        {"spec.studies.claimName": "Imaging_PVC"},
        "spec.studies.claimName in body should match",
    ),
    # Validation
    (
        "auc-threshold-above-one",
        "Validation",
        {"spec.acceptance.0.threshold": 1.5},
        'spec.acceptance[0].threshold: Invalid value: "object": threshold must be between 0 and 1 for proportions and '
        'probabilities (all metrics except hd95): it is above 1',
    ),
    (
        "negative-hd95",
        "Validation",
        {"spec.metrics": ["hd95"], "spec.acceptance": [{"metric": "hd95", "comparison": "<=", "threshold": -2}]},
        "threshold for hd95 is a distance in millimetres and must not be negative",
    ),
    ("unknown-metric", "Validation", {"spec.metrics": ["accuracy"]}, 'spec.metrics[0]: Unsupported value: "accuracy"'),
    (
        "schedule-not-cron",
        "Validation",
        {"spec.schedule": "every monday"},
        'spec.schedule: Invalid value: "string": must be a cron expression with exactly 5 fields',
    ),
    ("schedule-six-fields", "Validation", {"spec.schedule": "0 0 3 * * 1"}, "must be a cron expression"),
    ("missing-algorithm-ref", "Validation", {"spec.algorithmRef": DELETE}, "spec.algorithmRef: Required value"),
    (
        "criterion-metric-not-computed",
        "Validation",
        {"spec.metrics": ["sensitivity"]},
        "every acceptance criterion's metric must also be listed in metrics",
    ),
    (
        "history-limit-zero",
        "Validation",
        {"spec.historyLimit": 0},
        "spec.historyLimit in body should be greater than or equal to 1",
    ),
    (
        "unknown-comparison",
        "Validation",
        {"spec.acceptance.0.comparison": "=="},
        'spec.acceptance[0].comparison: Unsupported value: "=="',
    ),
    (
        "unknown-bound",
        "Validation",
        {"spec.acceptance.0.bound": "median"},
        'spec.acceptance[0].bound: Unsupported value: "median"',
    ),
    # SandboxPolicy
    (
        "no-registries",
        "SandboxPolicy",
        {"spec.allowedRegistries": []},
        "spec.allowedRegistries in body should have at least 1 items",
    ),
    ("registry-not-a-host", "SandboxPolicy", {"spec.allowedRegistries": ["docker hub"]}, "must be a registry host"),
    (
        "tiny-subgroups",
        "SandboxPolicy",
        {"spec.minSubgroupSize": 2},
        "spec.minSubgroupSize in body should be greater than or equal to 5",
    ),
    (
        "max-memory-not-quantity",
        "SandboxPolicy",
        {"spec.maxMemory": "big"},
        'spec.maxMemory: Invalid value: "string": must be a Kubernetes quantity',
    ),
    (
        "unknown-toleration-operator",
        "SandboxPolicy",
        {"spec.tolerations.0.operator": "Matches"},
        'spec.tolerations[0].operator: Unsupported value: "Matches"',
    ),
    (
        "bad-runtime-class",
        "SandboxPolicy",
        {"spec.runtimeClassName": "gVisor!"},
        "spec.runtimeClassName in body should match",
    ),
]



def _cases(
    kind: str, paths: list[str], value: Any, expected: str, tag: str
) -> list[tuple[str, str, dict[str, Any], str]]:
    """One case per field: the same kind of mistake in every field it can be made in."""
    return [(f"{tag}-{path.rsplit('.', 1)[-1].lower()}", kind, {path: value}, f"{path}: {expected}") for path in paths]


_ALGORITHM_QUANTITIES = ["spec.resources.cpu", "spec.resources.memory", "spec.resources.ephemeralStorage"]
_POLICY_QUANTITIES = ["spec.maxCpu", "spec.maxMemory", "spec.maxEphemeralStorage"]
_NOT_POSITIVE = 'Invalid value: "string": must be greater than zero, not'
_CONTROL = 'Invalid value: "string": must not contain control characters'
_PATH_DOTS = "must be a relative path without '.' or '..' segments"
_PATH_SLASH = "must be a relative path without a leading or trailing '/' or '//'"
_OVERLAP = "spec.groundTruth: Invalid value: \"object\": groundTruth must not overlap studies"
_CONFIDENCE = 'spec.confidenceLevel: Invalid value: "number": must be at least 0.5 and at most 0.999: it is'


def _truth(sub_path: str, claim: str = "imaging") -> dict[str, Any]:
    return {"spec.groundTruth": {"claimName": claim, "subPath": sub_path}}


# Classes found by an independent check (issue 8); every field of each class has a case.
INVALID += [
    # Quantities: zero and negative amounts, requests and policy maxima alike.
    *_cases("Algorithm", _ALGORITHM_QUANTITIES, "0", f"{_NOT_POSITIVE} 0", "zero"),
    *_cases("Algorithm", _ALGORITHM_QUANTITIES, "-1", f"{_NOT_POSITIVE} -1", "negative"),
    *_cases("SandboxPolicy", _POLICY_QUANTITIES, "0", f"{_NOT_POSITIVE} 0", "zero"),
    *_cases("SandboxPolicy", _POLICY_QUANTITIES, "-2Gi", f"{_NOT_POSITIVE} -2Gi", "negative"),
    ("zero-millicores", "Algorithm", {"spec.resources.cpu": "0m"}, f"spec.resources.cpu: {_NOT_POSITIVE} 0m"),
    (
        "cpu-not-a-quantity",
        "Algorithm",
        {"spec.resources.cpu": "two"},
        'spec.resources.cpu: Invalid value: "string": must be a Kubernetes quantity',
    ),
    # Lists that are sets.
    (
        "duplicate-labels",
        "Algorithm",
        {"spec.labels": ["normal", "nodule", "normal"]},
        'spec.labels[2]: Duplicate value: "normal"',
    ),
    (
        "duplicate-registries",
        "SandboxPolicy",
        {"spec.allowedRegistries": ["registry.vendor.example", "registry.vendor.example"]},
        'spec.allowedRegistries[1]: Duplicate value: "registry.vendor.example"',
    ),
    (
        "duplicate-namespaces",
        "SandboxPolicy",
        {"spec.namespaces": ["region", "region"]},
        'spec.namespaces[1]: Duplicate value: "region"',
    ),
    ("duplicate-metrics", "Validation", {"spec.metrics": ["auc", "auc"]}, 'spec.metrics[1]: Duplicate value: "auc"'),
    (
        "duplicate-subgroups",
        "Validation",
        {"spec.subgroups": ["sex", "sex"]},
        'spec.subgroups[1]: Duplicate value: "sex"',
    ),
    (
        "duplicate-deid-options",
        "Dataset",
        {"spec.deidentification.options": ["cleanGraphics", "cleanGraphics"]},
        'spec.deidentification.options[1]: Duplicate value: "cleanGraphics"',
    ),
    # The ground truth and the studies, spelt so that text comparison misses the overlap.
    (
        "truth-dot-slash",
        "Dataset",
        _truth("./chest/studies"),
        f'spec.groundTruth.subPath: Invalid value: "string": {_PATH_DOTS}',
    ),
    (
        "truth-dot-dot",
        "Dataset",
        _truth("chest/truth/../studies"),
        f'spec.groundTruth.subPath: Invalid value: "string": {_PATH_DOTS}',
    ),
    ("truth-dot", "Dataset", _truth("."), f'spec.groundTruth.subPath: Invalid value: "string": {_PATH_DOTS}'),
    (
        "truth-trailing-slash",
        "Dataset",
        _truth("chest/studies/"),
        f'spec.groundTruth.subPath: Invalid value: "string": {_PATH_SLASH}',
    ),
    (
        "truth-double-slash",
        "Dataset",
        _truth("chest//studies"),
        f'spec.groundTruth.subPath: Invalid value: "string": {_PATH_SLASH}',
    ),
    ("truth-slash-root", "Dataset", _truth("/"), f'spec.groundTruth.subPath: Invalid value: "string": {_PATH_SLASH}'),
    (
        "studies-trailing-slash",
        "Dataset",
        {"spec.studies.subPath": "chest/studies/"},
        f'spec.studies.subPath: Invalid value: "string": {_PATH_SLASH}',
    ),
    (
        "studies-dot-slash",
        "Dataset",
        {"spec.studies.subPath": "./chest/studies"},
        f'spec.studies.subPath: Invalid value: "string": {_PATH_DOTS}',
    ),
    ("truth-is-claim-root", "Dataset", _truth(""), _OVERLAP),
    ("studies-are-claim-root", "Dataset", {"spec.studies.subPath": "", **_truth("chest/truth")}, _OVERLAP),
    ("truth-contains-studies", "Dataset", _truth("chest"), _OVERLAP),
    ("truth-other-case", "Dataset", _truth("Chest/Studies"), _OVERLAP),
    # Fractional bounds, with whole-number and fractional values on either side.
    *[
        (f"confidence-{str(v).replace('.', '_')}", "Validation", {"spec.confidenceLevel": v}, _CONFIDENCE)
        for v in (0, 1, 95, -1, 0.3, 0.4999, 0.9995)
    ],
    # Cron fields out of range, and croniter extensions the admission grammar leaves out.
    *[
        (f"cron-{i}", "Validation", {"spec.schedule": expr}, f'spec.schedule: Invalid value: "string": {text}')
        for i, (expr, text) in enumerate(
            [
                ("60 * * * *", "field 1 (minute) must be 0-59"),
                ("*/0 * * * *", "field 1 (minute) must be 0-59"),
                ("0 24 * * *", "field 2 (hour) must be 0-23"),
                ("0 0-25 * * *", "field 2 (hour) must be 0-23"),
                ("0 0 0 * *", "field 3 (day-of-month) must be 1-31"),
                ("0 0 32 * *", "field 3 (day-of-month) must be 1-31"),
                ("0 0 L * *", "field 3 (day-of-month) must be 1-31"),
                ("0 0 1 13 *", "field 4 (month) must be 1-12 or jan-dec"),
                ("0 0 1 0 *", "field 4 (month) must be 1-12 or jan-dec"),
                ("0 0 1 foo *", "field 4 (month) must be 1-12 or jan-dec"),
                ("0 0 * * 8", "field 5 (day-of-week) must be 0-7"),
                ("0 0 * * 1#2", "field 5 (day-of-week) must be 0-7"),
                ("0 0 * * mon-funday", "field 5 (day-of-week) must be 0-7"),
                ("0 0 * *", "must be a cron expression with exactly 5 fields separated by spaces"),
                ("@reboot", "must be one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"),
                ("0\t0 * * *", "must not contain control characters"),
            ]
        )
    ],
    ("queue-name-uppercase", "Validation", {"spec.queueName": "Team_Queue"}, "spec.queueName in body should match"),
    ("queue-name-too-long", "Validation", {"spec.queueName": "q" * 64}, "spec.queueName: Too long"),
    ("policy-queue-name", "SandboxPolicy", {"spec.queueName": "gpu queue"}, "spec.queueName in body should match"),
    (
        "gpus-in-use-below-per-run",
        "SandboxPolicy",
        {"spec.maxGpusInUse": 1},
        'spec.maxGpusInUse: Invalid value: "object": maxGpusInUse must be at least maxGpusPerRun',
    ),
    # Free text that would print as a forged line, or restyle a terminal.
    *_cases(
        "Algorithm",
        [
            "spec.vendor",
            "spec.product",
            "spec.version",
            "spec.positiveLabel",
            "spec.regulatory.udi",
            "spec.regulatory.notifiedBody",
            "spec.regulatory.intendedUse",
        ],
        "Acme\n| auc | 0.990 | [0.980, 0.999] | delong |",
        _CONTROL,
        "newline",
    ),
    ("escape-in-vendor", "Algorithm", {"spec.vendor": "\x1b[2J\x1b[32mApproved"}, f"spec.vendor: {_CONTROL}"),
    ("csi-in-product", "Algorithm", {"spec.product": "Chest\x9b31mAI"}, f"spec.product: {_CONTROL}"),
    ("bidi-in-vendor", "Algorithm", {"spec.vendor": "Acme \u202egnissap"}, f"spec.vendor: {_CONTROL}"),
    ("line-separator-in-version", "Algorithm", {"spec.version": "1.2\u20283"}, f"spec.version: {_CONTROL}"),
    (
        "carriage-return-in-version",
        "Algorithm",
        {"spec.version": "1.2.0\r## Verdict: Passed"},
        f"spec.version: {_CONTROL}",
    ),
    (
        "newline-in-label",
        "Algorithm",
        {"spec.labels": ["normal", "nodule\n# Passed"], "spec.positiveLabel": "normal"},
        f"spec.labels[1]: {_CONTROL}",
    ),
    (
        "newline-in-image",
        "Algorithm",
        {"spec.image": f"registry.vendor.example/chest-ai\n@{DIGEST}"},
        f"spec.image: {_CONTROL}",
    ),
    *_cases("Dataset", ["spec.description", "spec.site", "spec.revision"], "2026\n# Verified", _CONTROL, "newline"),
    ("newline-in-sub-path", "Dataset", {"spec.studies.subPath": "chest\nstudies"}, f"spec.studies.subPath: {_CONTROL}"),
    (
        "newline-in-toleration",
        "SandboxPolicy",
        {"spec.tolerations.0.key": "nvidia.com/gpu\nx"},
        f"spec.tolerations[0].key: {_CONTROL}",
    ),
    (
        "newline-in-node-selector",
        "SandboxPolicy",
        {"spec.nodeSelector": {"pool": "gpu\nx"}},
        f"spec.nodeSelector[pool]: {_CONTROL}",
    ),
    # Image references: the message names the part that is wrong.
    (
        "image-digest-not-sha256",
        "Algorithm",
        {"spec.image": "registry.vendor.example/chest-ai@md5:" + "0" * 32},
        "the digest after @ must start with sha256:",
    ),
    (
        "image-digest-too-long",
        "Algorithm",
        {"spec.image": f"registry.vendor.example/chest-ai@{DIGEST}0"},
        "the digest is too long: it must have 64 lowercase hex digits after sha256:",
    ),
    (
        "image-digest-uppercase",
        "Algorithm",
        {"spec.image": f"registry.vendor.example/chest-ai@{DIGEST.upper().replace('SHA256', 'sha256')}"},
        "the digest after sha256: must be 64 lowercase hex digits (0-9, a-f)",
    ),
    (
        "image-two-digests",
        "Algorithm",
        {"spec.image": f"registry.vendor.example/chest-ai@{DIGEST}@{DIGEST}"},
        "the digest is too long: it must have 64 lowercase hex digits after sha256:, and the reference only one @",
    ),
    (
        "image-uppercase-repository",
        "Algorithm",
        {"spec.image": f"registry.vendor.example/Radiology/ChestAI@{DIGEST}"},
        "the repository path after the registry host must be lowercase",
    ),
    (
        "image-uppercase-registry",
        "Algorithm",
        {"spec.image": f"Registry.Vendor.example/chest-ai@{DIGEST}"},
        "must name a registry host before the repository",
    ),
    (
        "image-no-repository",
        "Algorithm",
        {"spec.image": f"registry.vendor.example@{DIGEST}"},
        "must name a registry host before the repository",
    ),
    (
        "image-bad-tag",
        "Algorithm",
        {"spec.image": f"registry.vendor.example/chest-ai:-rc1@{DIGEST}"},
        "the tag after ':' must be 1 to 128 letters",
    ),
    (
        "image-tag-only",
        "Algorithm",
        {"spec.image": "registry.vendor.example/chest-ai:latest"},
        "has no digest: must be pinned by digest",
    ),
]

# Values at the edges of what is allowed: each must still be admitted.
VALID_EDGES: list[tuple[str, str, dict[str, Any]]] = [
    ("confidence-0_9", "Validation", {"spec.confidenceLevel": 0.9}),
    ("confidence-0_99", "Validation", {"spec.confidenceLevel": 0.99}),
    ("confidence-0_5", "Validation", {"spec.confidenceLevel": 0.5}),
    ("confidence-0_999", "Validation", {"spec.confidenceLevel": 0.999}),
    ("memory-1mi", "Algorithm", {"spec.resources.memory": "1Mi"}),
    ("cpu-1m", "Algorithm", {"spec.resources.cpu": "1m"}),
    ("policy-max-cpu-100m", "SandboxPolicy", {"spec.maxCpu": "100m"}),
    ("cron-steps-ranges-names", "Validation", {"spec.schedule": "*/5 1-3 * * MON-FRI"}),
    ("cron-lists-and-limits", "Validation", {"spec.schedule": "0,59 0,23 1,31 1,12,jan,Dec 0,7,sun"}),
    ("cron-range-step", "Validation", {"spec.schedule": "0-30/15 */2 1-31/2 */3 mon-fri"}),
    ("cron-midnight", "Validation", {"spec.schedule": "@midnight"}),
    ("queue-name-dotted", "Validation", {"spec.queueName": "team-a.gpu"}),
    ("gpus-in-use-equal-per-run", "SandboxPolicy", {"spec.maxGpusInUse": 2}),
    ("no-gpus-at-all", "SandboxPolicy", {"spec.maxGpusInUse": 0, "spec.maxGpusPerRun": 0}),
    ("truth-sibling-with-shared-prefix", "Dataset", _truth("chest/studies-truth")),
    ("truth-sibling", "Dataset", _truth("chest/truth")),
    ("studies-root-truth-elsewhere", "Dataset", {"spec.studies.subPath": ""}),
    ("unicode-vendor", "Algorithm", {"spec.vendor": "Société Générale d'Imagerie — Zürich"}),
    ("punctuation-in-version", "Algorithm", {"spec.version": "1.2.0-rc.1+build|5 <b>*x*</b>"}),
    (
        "image-with-port-and-tag",
        "Algorithm",
        {"spec.image": f"localhost:5000/lightbox/chest_ai.v2:1.2.0-RC_1@{DIGEST}"},
    ),
]


def invalid_manifest(kind: str, changes: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(VALID[kind]())
    for path, value in changes.items():
        _set(manifest, path, value)
    return manifest
