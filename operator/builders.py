"""Kubernetes objects of a sandbox run, rendered as plain dicts from the API models.

Pure functions: no API calls, no clock. Everything a reviewer needs to check
the security boundary is in this file: which container sees which volume, what
each may write, and under which security context it runs. Every pod here must
pass PodSecurity admission at level ``restricted``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from lightbox.api import Algorithm, Dataset, SandboxPolicy, Validation, subpath
from lightbox.api import run as layout
from lightbox.api.common import VolumeLocation
from lightbox.api.run import IsolationCheckConfig, ScorerConfig, StagerConfig
from lightbox.operator.config import OperatorConfig
from lightbox.sandbox import packaging
from lightbox.sandbox.contract import vendor_environment

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_RESOURCE = "nvidia.com/gpu"

COMPONENT_RUN = "run"
COMPONENT_PROBE = "isolation-probe"
COMPONENT_VERIFY = "dataset-verify"

# Labels are limited to 63 characters; the full names ride in annotations.
LABEL_DATASET = f"{layout.GROUP}/dataset"
LABEL_POLICY = f"{layout.GROUP}/policy"
ANNOTATION_VALIDATION = f"{layout.GROUP}/validation-name"
ANNOTATION_DATASET = f"{layout.GROUP}/dataset-name"
ANNOTATION_POLICY = f"{layout.GROUP}/policy-name"
ANNOTATION_SCHEDULED_FOR = f"{layout.GROUP}/scheduled-for"
ANNOTATION_GENERATION = f"{layout.GROUP}/generation"

# Unprivileged ids of the distroless "nonroot" user: any non-zero id passes
# PodSecurity, a fixed one keeps file ownership on emptyDirs predictable.
NONROOT_UID = 65532
PROBE_DEADLINE_SECONDS = 120


def label_value(name: str) -> str:
    """A name as a label value (at most 63 characters), hashed when too long."""
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-.')}-{digest}"


def owner_reference(obj: dict[str, Any] | Any, controller: bool = True) -> dict[str, Any]:
    """Owner reference to a custom resource (model or raw dict with metadata.uid)."""
    if hasattr(obj, "metadata") and not isinstance(obj, dict):
        meta, api_version, kind = obj.metadata, obj.api_version, obj.kind
    else:
        meta, api_version, kind = obj["metadata"], obj["apiVersion"], obj["kind"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "fsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _placement(policy: SandboxPolicy | None) -> dict[str, Any]:
    """Runtime class, node selector and tolerations the policy asks for."""
    if policy is None:
        return {}
    spec = policy.spec
    out: dict[str, Any] = {}
    if spec.runtime_class_name:
        out["runtimeClassName"] = spec.runtime_class_name
    if spec.node_selector:
        out["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        out["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    return out


def _pod_basics(policy: SandboxPolicy | None) -> dict[str, Any]:
    """What every sandbox pod shares: no token, no service links, no retries, restricted."""
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        **_placement(policy),
    }


def _env(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


def _mount(volume: str, path: str, read_only: bool, sub_path: str = "") -> dict[str, Any]:
    mount: dict[str, Any] = {"name": volume, "mountPath": path, "readOnly": read_only}
    if sub_path:
        mount["subPath"] = sub_path
    return mount


def _claim_volume(name: str, location: VolumeLocation) -> dict[str, Any]:
    return {"name": name, "persistentVolumeClaim": {"claimName": location.claim_name, "readOnly": True}}


#: The one volume of a Dataset whose studies and ground truth share a claim.
DATASET_VOLUME = "dataset"


def data_volumes(studies: VolumeLocation, truth: VolumeLocation) -> tuple[str, str, list[dict[str, Any]]]:
    """(studies volume, truth volume, volumes) for a run pod.

    One claim for both gives one volume, mounted twice by subPath: the kubelet never mounts
    a pod with two volumes of one PersistentVolumeClaim (the pod stays ContainerCreating).
    Who mounts which subPath is unchanged, so the truth still reaches the score step only."""
    if studies.claim_name == truth.claim_name:
        return DATASET_VOLUME, DATASET_VOLUME, [_claim_volume(DATASET_VOLUME, studies)]
    return (layout.STUDIES_VOLUME, layout.TRUTH_VOLUME,
            [_claim_volume(layout.STUDIES_VOLUME, studies), _claim_volume(layout.TRUTH_VOLUME, truth)])


def _trusted_container(name: str, image: str, command: list[str], config: OperatorConfig) -> dict[str, Any]:
    resources = config.trusted_resources.as_dict()
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "securityContext": container_security_context(),
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "terminationMessagePath": layout.TERMINATION_LOG_PATH,
        "terminationMessagePolicy": "File",
    }


def network_policy(
    name: str, namespace: str, run: str, labels: dict[str, str], owner: dict[str, Any]
) -> dict[str, Any]:
    """Deny all ingress and egress for the pods of one run: no rules at all."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "ownerReferences": [owner]},
        "spec": {"podSelector": {"matchLabels": {layout.LABEL_RUN: run}}, "policyTypes": ["Ingress", "Egress"]},
    }


def run_labels(validation: Validation, run: str) -> dict[str, str]:
    return {
        layout.LABEL_COMPONENT: COMPONENT_RUN,
        layout.LABEL_RUN: label_value(run),
        layout.LABEL_VALIDATION: label_value(validation.metadata["name"]),
    }


def queue_name(validation: Validation, policy: SandboxPolicy | None) -> str | None:
    return validation.spec.queue_name or (policy.spec.queue_name if policy else None)


def scorer_config(validation: Validation, algorithm: Algorithm, policy: SandboxPolicy | None) -> ScorerConfig:
    spec = validation.spec
    return ScorerConfig(
        task=algorithm.spec.task,
        packaging=algorithm.spec.packaging,
        labels=list(algorithm.spec.labels or []),
        positive_label=algorithm.spec.positive_label,
        operating_threshold=algorithm.spec.operating_threshold,
        metrics=list(spec.metrics),
        subgroups=list(spec.subgroups),
        min_subgroup_size=policy.spec.min_subgroup_size if policy else 10,
        pooled_evidence=policy.spec.pooled_evidence if policy else False,
        confidence_level=spec.confidence_level,
        bootstrap=spec.bootstrap,
    )


def isolation_check_config(config: OperatorConfig, api_server: str | None) -> IsolationCheckConfig:
    """What the stage step tries before the vendor may start (docs/isolation.md)."""
    return IsolationCheckConfig(
        api_server=config.probe_api_server or api_server,
        dns=[config.probe_dns],
        outside=[config.probe_outside],
        clean_rounds=config.isolation_check_rounds,
        bound_seconds=config.isolation_check_bound_seconds,
    )


def _node_ip_env() -> dict[str, Any]:
    return {"name": layout.NODE_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}


# A trusted container that requests no GPU asks the NVIDIA toolkit for all of them: if it
# then sees any, the node lets a container's environment choose its GPUs, so a vendor image
# could too, and the check refuses the run (docs/gpus.md).
GPU_CANARY = {layout.NVIDIA_VISIBLE_DEVICES_ENV: "all"}


def run_pod_spec(
    validation: Validation,
    algorithm: Algorithm,
    dataset: Dataset,
    policy: SandboxPolicy | None,
    config: OperatorConfig,
    api_server: str | None = None,
) -> dict[str, Any]:
    """stage (trusted) → vendor → score (trusted, the only one with the ground truth).

    ``api_server`` is the endpoint the operator itself reaches the API server at, one of
    the targets the stage step's isolation check must find silent."""
    algo, data = algorithm.spec, dataset.spec
    # Last line of defence (admission refuses this first): never build a pod whose
    # stage step would read the ground truth as studies, or whose truth holds the studies.
    if subpath.overlap(data.studies, data.ground_truth):
        raise ValueError(
            f"Dataset {dataset.metadata.get('name')}: spec.groundTruth overlaps spec.studies; refusing to mount it"
        )
    studies_volume, truth_volume, claim_volumes = data_volumes(data.studies, data.ground_truth)
    stage = _stage_container(algorithm, dataset, config, api_server, studies_volume)
    vendors = [_vendor_container(algorithm)]
    if packaging.runs_per_case(algo.packaging):
        # The image runs once per case, each run seeing only its case's folders
        # (sandbox/packaging.py); the stage step lays them out, so it mounts the output too.
        cases = dataset.status.case_count if dataset.status else None
        if not cases:
            raise ValueError(
                f"Dataset {dataset.metadata.get('name')}: packaging {algo.packaging} needs the verified case count"
            )
        vendors = packaging.per_case_containers(vendors[0], algo.packaging, cases, layout.INPUT_DIR, layout.OUTPUT_DIR)
        stage["env"].insert(0, {"name": layout.OUTPUT_DIR_ENV, "value": layout.OUTPUT_DIR})
        stage["volumeMounts"].append(_mount(layout.OUTPUT_VOLUME, layout.OUTPUT_DIR, False))
    score = _score_container(validation, algorithm, dataset, policy, config, truth_volume)
    return {
        **_pod_basics(policy),
        "activeDeadlineSeconds": algo.timeout_seconds,
        "initContainers": [stage, *vendors],
        "containers": [score],
        "volumes": [
            *claim_volumes,
            {"name": layout.INPUT_VOLUME, "emptyDir": {}},
            # The vendor's only writable place: bounded like its ephemeral storage.
            {"name": layout.OUTPUT_VOLUME, "emptyDir": {"sizeLimit": algo.resources.ephemeral_storage}},
            {"name": layout.WORK_VOLUME, "emptyDir": {}},
            {"name": layout.TMP_VOLUME, "emptyDir": {"sizeLimit": config.trusted_resources.ephemeral_storage}},
        ],
    }


_TERMINATION = {layout.TERMINATION_LOG_ENV: layout.TERMINATION_LOG_PATH}


def _stage_container(
    algorithm: Algorithm, dataset: Dataset, config: OperatorConfig, api_server: str | None, studies_volume: str
) -> dict[str, Any]:
    """The trusted stage step: de-identification gate, isolation check, the vendor's input laid out."""
    algo, data = algorithm.spec, dataset.spec
    stager = StagerConfig(
        task=algo.task,
        packaging=algo.packaging,
        format=data.format,
        labels=list(algo.labels or []),
        deid_options=list(data.deidentification.options),
        verified_content_hash=dataset.status.content_hash if dataset.status else None,
    )
    stage = _trusted_container(layout.STAGE_CONTAINER, config.trusted_image, ["lightbox", "stage"], config)
    stage["env"] = _env(
        {
            layout.STUDIES_DIR_ENV: layout.STUDIES_DIR,
            layout.INPUT_DIR_ENV: layout.INPUT_DIR,
            layout.WORK_DIR_ENV: layout.WORK_DIR,
            layout.STAGER_CONFIG_ENV: stager.model_dump_json(by_alias=True),
            layout.ISOLATION_CHECK_ENV: isolation_check_config(config, api_server).model_dump_json(by_alias=True),
            "TMPDIR": layout.TMP_DIR,
            **GPU_CANARY,
            **_TERMINATION,
        }
    ) + [_node_ip_env()]
    stage["volumeMounts"] = [
        _mount(studies_volume, layout.STUDIES_DIR, True, data.studies.sub_path),
        _mount(layout.INPUT_VOLUME, layout.INPUT_DIR, False),
        _mount(layout.WORK_VOLUME, layout.WORK_DIR, False),
        _mount(layout.TMP_VOLUME, layout.TMP_DIR, False),
    ]
    return stage


def _vendor_container(algorithm: Algorithm) -> dict[str, Any]:
    """The vendor's image with its own entrypoint: the contract fixes only the directories."""
    algo = algorithm.spec
    vendor_resources = {
        "cpu": algo.resources.cpu,
        "memory": algo.resources.memory,
        "ephemeral-storage": algo.resources.ephemeral_storage,
    }
    if algo.resources.gpus:
        vendor_resources[GPU_RESOURCE] = str(algo.resources.gpus)
    vendor_env = dict(vendor_environment(algo.task, list(algo.labels or []), layout.INPUT_DIR, layout.OUTPUT_DIR))
    if not algo.resources.gpus:
        # The pod's env overrides the image's ENV: an image that sets NVIDIA_VISIBLE_DEVICES=all
        # (or a legacy CUDA image, which the toolkit treats as "all") gets none. GPU runs leave
        # it to the device plugin, whose value is the allocation (docs/gpus.md).
        vendor_env[layout.NVIDIA_VISIBLE_DEVICES_ENV] = "void"
    return {
        "name": layout.VENDOR_CONTAINER,
        "image": algo.image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(vendor_env),
        "volumeMounts": [
            _mount(layout.INPUT_VOLUME, layout.INPUT_DIR, True),
            _mount(layout.OUTPUT_VOLUME, layout.OUTPUT_DIR, False),
        ],
        "resources": {"requests": dict(vendor_resources), "limits": dict(vendor_resources)},
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "File",
    }


def _score_container(
    validation: Validation,
    algorithm: Algorithm,
    dataset: Dataset,
    policy: SandboxPolicy | None,
    config: OperatorConfig,
    truth_volume: str,
) -> dict[str, Any]:
    """The trusted scorer: the only container that sees the ground truth."""
    score = _trusted_container(layout.SCORE_CONTAINER, config.trusted_image, ["lightbox", "score"], config)
    score["env"] = _env(
        {
            layout.OUTPUT_DIR_ENV: layout.OUTPUT_DIR,
            layout.TRUTH_DIR_ENV: layout.TRUTH_DIR,
            layout.WORK_DIR_ENV: layout.WORK_DIR,
            layout.SCORER_CONFIG_ENV: scorer_config(validation, algorithm, policy).model_dump_json(by_alias=True),
            "TMPDIR": layout.TMP_DIR,
            **_TERMINATION,
        }
    )
    score["volumeMounts"] = [
        _mount(layout.OUTPUT_VOLUME, layout.OUTPUT_DIR, True),
        _mount(truth_volume, layout.TRUTH_DIR, True, dataset.spec.ground_truth.sub_path),
        _mount(layout.WORK_VOLUME, layout.WORK_DIR, False),
        _mount(layout.TMP_VOLUME, layout.TMP_DIR, False),
    ]
    return score


def run_job(
    validation: Validation,
    algorithm: Algorithm,
    dataset: Dataset,
    policy: SandboxPolicy | None,
    run: str,
    number: int,
    config: OperatorConfig,
    scheduled_for: str | None = None,
    api_server: str | None = None,
) -> dict[str, Any]:
    """The batch/v1 Job of one run, owned by the Validation."""
    labels = run_labels(validation, run)
    annotations = {
        layout.ANNOTATION_RUN_NUMBER: str(number),
        ANNOTATION_VALIDATION: validation.metadata["name"],
    }
    if scheduled_for:
        annotations[ANNOTATION_SCHEDULED_FOR] = scheduled_for
    if dataset.status and dataset.status.content_hash:
        annotations[f"{layout.GROUP}/dataset-hash"] = dataset.status.content_hash
    queue = queue_name(validation, policy)
    job = _job(
        run,
        validation,
        labels,
        annotations,
        algorithm.spec.timeout_seconds + config.job_deadline_slack_seconds,
        run_pod_spec(validation, algorithm, dataset, policy, config, api_server),
    )
    if queue:
        # Kueue admits the Job by unsuspending it once quota is free.
        job["metadata"]["labels"][KUEUE_QUEUE_LABEL] = queue
        job["spec"]["suspend"] = True
    return job


def _job(
    name: str,
    owner: Validation | Dataset,
    labels: dict[str, str],
    annotations: dict[str, str],
    deadline: int,
    pod_spec: dict[str, Any],
) -> dict[str, Any]:
    """A single-pod Job that never retries (a failed sandbox run is reported, not repeated), owned by ``owner``."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.metadata["namespace"],
            "labels": dict(labels),
            "annotations": dict(annotations),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": deadline,
            "suspend": False,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": pod_spec,
            },
        },
    }


def run_network_policy(validation: Validation, run: str) -> dict[str, Any]:
    return network_policy(
        run,
        validation.metadata["namespace"],
        label_value(run),
        run_labels(validation, run),
        owner_reference(validation),
    )


def probe_name(policy: str, stamp: int) -> str:
    return label_value(f"lightbox-probe-{policy}-{stamp}")


def probe_pod(
    policy: SandboxPolicy,
    namespace: str,
    name: str,
    config: OperatorConfig,
    api_server: str,
) -> dict[str, Any]:
    """A pod placed and confined like a vendor run that tries to reach the network."""
    labels = {
        layout.LABEL_COMPONENT: COMPONENT_PROBE,
        layout.LABEL_RUN: label_value(name),
        LABEL_POLICY: label_value(policy.metadata["name"]),
    }
    command = [
        "lightbox",
        "probe",
        "--api-server",
        api_server,
        "--dns",
        config.probe_dns,
        "--outside",
        config.probe_outside,
        "--timeout",
        str(config.probe_timeout_seconds),
        # The stage step's rule, so the probe pod's own first seconds (a policy engine's
        # window for a new pod) are waited out, not reported as an open namespace.
        "--clean-rounds",
        str(config.isolation_check_rounds),
        "--bound",
        str(config.isolation_check_bound_seconds),
    ]
    container = _trusted_container("probe", config.trusted_image, command, config)
    container["env"] = _env({layout.TERMINATION_LOG_ENV: layout.TERMINATION_LOG_PATH, **GPU_CANARY}) + [_node_ip_env()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_POLICY: policy.metadata["name"]},
            "ownerReferences": [owner_reference(policy)],
        },
        "spec": {**_pod_basics(policy), "activeDeadlineSeconds": PROBE_DEADLINE_SECONDS, "containers": [container]},
    }


def probe_network_policy(policy: SandboxPolicy, namespace: str, name: str) -> dict[str, Any]:
    labels = {layout.LABEL_COMPONENT: COMPONENT_PROBE, LABEL_POLICY: label_value(policy.metadata["name"])}
    return network_policy(name, namespace, label_value(name), labels, owner_reference(policy))


def verify_job_name(dataset: str, generation: int) -> str:
    return label_value(f"{dataset}-verify-g{generation}")


def verify_job(dataset: Dataset, name: str, config: OperatorConfig) -> dict[str, Any]:
    """Runs the de-identification gate on the studies; its summary comes back as the termination message."""
    labels = {
        layout.LABEL_COMPONENT: COMPONENT_VERIFY,
        layout.LABEL_RUN: label_value(name),
        LABEL_DATASET: label_value(dataset.metadata["name"]),
    }
    generation = str(dataset.metadata.get("generation", 1))
    annotations = {ANNOTATION_DATASET: dataset.metadata["name"], ANNOTATION_GENERATION: generation}
    command = ["python", "-m", "lightbox.operator.verifystep", layout.STUDIES_DIR]
    for option in dataset.spec.deidentification.options:
        command += ["--option", option]
    if dataset.spec.format == "photo":  # its own gate (photos and cohort.csv); DICOM and slides share one
        command += ["--format", dataset.spec.format]
    container = _trusted_container("verify", config.trusted_image, command, config)
    container["env"] = _env(
        {
            layout.STUDIES_DIR_ENV: layout.STUDIES_DIR,
            "TMPDIR": layout.TMP_DIR,
            layout.TERMINATION_LOG_ENV: layout.TERMINATION_LOG_PATH,
        }
    )
    container["volumeMounts"] = [
        _mount(layout.STUDIES_VOLUME, layout.STUDIES_DIR, True, dataset.spec.studies.sub_path),
        _mount(layout.TMP_VOLUME, layout.TMP_DIR, False),
    ]
    pod_spec = {
        **_pod_basics(None),
        "activeDeadlineSeconds": config.verify_deadline_seconds,
        "containers": [container],
        "volumes": [
            _claim_volume(layout.STUDIES_VOLUME, dataset.spec.studies),
            {"name": layout.TMP_VOLUME, "emptyDir": {"sizeLimit": config.trusted_resources.ephemeral_storage}},
        ],
    }
    return _job(name, dataset, labels, annotations, config.verify_deadline_seconds, pod_spec)


def verify_network_policy(dataset: Dataset, name: str) -> dict[str, Any]:
    labels = {layout.LABEL_COMPONENT: COMPONENT_VERIFY, LABEL_DATASET: label_value(dataset.metadata["name"])}
    return network_policy(name, dataset.metadata["namespace"], label_value(name), labels, owner_reference(dataset))
