"""Every object the operator sends to the API server, written out whole (mutmut survivors).

test_builders.py checks properties one at a time; a renamed key or a changed value outside
those properties (``imagePullPolicy``, ``terminationMessagePolicy``, a mount's ``readOnly``,
a NetworkPolicy's namespace) went unnoticed. Here each manifest is compared with a literal
written from the README (three steps, who mounts what, deny-all network), the vendor
contract (uid 65532, /input read-only, /output the only writable place, HOME and TMPDIR
there) and docs/gpus.md (NVIDIA_VISIBLE_DEVICES). The operator configuration is given
explicitly, so no expected value depends on a default.
"""

from __future__ import annotations

import json

import pytest
from factories import algorithm, dataset, policy, validation

from lightbox.operator import builders
from lightbox.operator.config import OperatorConfig, TrustedResources

TRUSTED = "reg.example/lightbox@sha256:" + "1" * 64
VENDOR = "registry.vendor.example/radiology/chest-xray:1.2.0@sha256:" + "ab" * 32
HASH = "sha256:" + "00" * 32
CONFIG = OperatorConfig(
    trusted_image=TRUSTED,
    probe_dns="10.0.0.10:53",
    probe_outside="192.0.2.1:443",
    probe_timeout_seconds=2.5,
    isolation_check_rounds=4,
    isolation_check_bound_seconds=20.0,
    verify_deadline_seconds=1234,
    job_deadline_slack_seconds=100,
    trusted_resources=TrustedResources(cpu="500m", memory="1Gi", ephemeral_storage="3Gi"),
)

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
TRUSTED_RESOURCES = {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "3Gi"}
TERMINATION_LOG = {"name": "LIGHTBOX_TERMINATION_LOG", "value": "/dev/termination-log"}
NODE_IP = {"name": "LIGHTBOX_NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
TOLERATION = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}


def trusted(name, command, env, mounts=None):
    container = {
        "name": name,
        "image": TRUSTED,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "securityContext": CONTAINER_SECURITY,
        "resources": {"requests": TRUSTED_RESOURCES, "limits": TRUSTED_RESOURCES},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "env": env,
    }
    if mounts is not None:
        container["volumeMounts"] = mounts
    return container


def owner(kind, name, uid):
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def deny_all(name, labels, run, owner_ref):
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "region", "labels": labels, "ownerReferences": [owner_ref]},
        "spec": {"podSelector": {"matchLabels": {"lightbox.dev/run": run}}, "policyTypes": ["Ingress", "Egress"]},
    }


def with_uid(obj, uid):
    obj.metadata["uid"] = uid
    return obj


def decoded(pod_spec):
    """The pod spec with JSON-valued env entries (step configurations) parsed."""
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        for entry in container.get("env", []):
            if entry.get("value", "").startswith("{"):
                entry["value"] = json.loads(entry["value"])
    return pod_spec


def run_objects(**kw):
    pol = policy(minSubgroupSize=7, tolerations=[TOLERATION], **kw)
    val = with_uid(validation(metrics=["auc", "sensitivity"], subgroups=["sex"], confidenceLevel=0.9), "val-uid")
    algo = algorithm(resources={"gpus": 0, "cpu": "2", "memory": "8Gi", "ephemeralStorage": "5Gi"})
    return val, algo, dataset(), pol


RUN_LABELS = {"lightbox.dev/component": "run", "lightbox.dev/run": "chest-v1-r3", "lightbox.dev/validation": "chest-v1"}
RUN_ANNOTATIONS = {
    "lightbox.dev/run-number": "3",
    "lightbox.dev/validation-name": "chest-v1",
    "lightbox.dev/scheduled-for": "2026-01-01T00:00:00Z",
    "lightbox.dev/dataset-hash": HASH,
}

RUN_POD = {
    "restartPolicy": "Never",
    "automountServiceAccountToken": False,
    "enableServiceLinks": False,
    "securityContext": POD_SECURITY,
    "tolerations": [{**TOLERATION, "value": ""}],
    "activeDeadlineSeconds": 1800,
    "initContainers": [
        trusted(
            "stage",
            ["lightbox", "stage"],
            [
                {"name": "LIGHTBOX_STUDIES_DIR", "value": "/data/studies"},
                {"name": "LIGHTBOX_INPUT_DIR", "value": "/input"},
                {"name": "LIGHTBOX_WORK_DIR", "value": "/work"},
                {
                    "name": "LIGHTBOX_STAGER_CONFIG",
                    "value": {
                        "task": "classification",
                        "packaging": "lightbox",
                        "format": "dicom",
                        "labels": ["normal", "nodule"],
                        "deidOptions": [],
                        "maxCases": None,
                        "verifiedContentHash": HASH,
                    },
                },
                {
                    "name": "LIGHTBOX_ISOLATION_CHECK",
                    "value": {
                        "apiServer": "https://10.0.0.1:6443",
                        "dns": ["10.0.0.10:53"],
                        "outside": ["192.0.2.1:443"],
                        "cleanRounds": 4,
                        "boundSeconds": 20.0,
                        "gpusAllowed": 0,
                        "intervalSeconds": 1.0,
                        "timeoutSeconds": 1.0,
                    },
                },
                {"name": "TMPDIR", "value": "/tmp"},
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},  # the GPU canary (docs/gpus.md)
                TERMINATION_LOG,
                NODE_IP,
            ],
            [
                {"name": "dataset", "mountPath": "/data/studies", "readOnly": True, "subPath": "chest/studies"},
                {"name": "input", "mountPath": "/input", "readOnly": False},
                {"name": "work", "mountPath": "/work", "readOnly": False},
                {"name": "tmp", "mountPath": "/tmp", "readOnly": False},
            ],
        ),
        {
            "name": "vendor",
            "image": VENDOR,
            "imagePullPolicy": "IfNotPresent",
            "env": [
                {"name": "LIGHTBOX_INPUT_DIR", "value": "/input"},
                {"name": "LIGHTBOX_OUTPUT_DIR", "value": "/output"},
                {"name": "LIGHTBOX_CONTRACT_VERSION", "value": "v1"},
                {"name": "LIGHTBOX_TASK", "value": "classification"},
                {"name": "LIGHTBOX_LABELS", "value": '["normal", "nodule"]'},
                {"name": "HOME", "value": "/output"},
                {"name": "TMPDIR", "value": "/output"},
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},  # no GPU requested: none visible
            ],
            "volumeMounts": [
                {"name": "input", "mountPath": "/input", "readOnly": True},
                {"name": "output", "mountPath": "/output", "readOnly": False},
            ],
            "resources": {
                "requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "5Gi"},
                "limits": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "5Gi"},
            },
            "securityContext": CONTAINER_SECURITY,
            "terminationMessagePolicy": "File",
        },
    ],
    "containers": [
        trusted(
            "score",
            ["lightbox", "score"],
            [
                {"name": "LIGHTBOX_OUTPUT_DIR", "value": "/output"},
                {"name": "LIGHTBOX_TRUTH_DIR", "value": "/data/truth"},
                {"name": "LIGHTBOX_WORK_DIR", "value": "/work"},
                {
                    "name": "LIGHTBOX_SCORER_CONFIG",
                    "value": {
                        "task": "classification",
                        "packaging": "lightbox",
                        "labels": ["normal", "nodule"],
                        "positiveLabel": "nodule",
                        "operatingThreshold": 0.5,
                        "metrics": ["auc", "sensitivity"],
                        "subgroups": ["sex"],
                        "minSubgroupSize": 7,
                        "pooledEvidence": False,  # off unless the SandboxPolicy sets it
                        "confidenceLevel": 0.9,
                        "bootstrap": {"level": "patient", "resamples": 2000, "seed": 0},
                        "frocFalsePositives": [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
                    },
                },
                {"name": "TMPDIR", "value": "/tmp"},
                TERMINATION_LOG,
            ],
            [
                {"name": "output", "mountPath": "/output", "readOnly": True},
                {"name": "dataset", "mountPath": "/data/truth", "readOnly": True, "subPath": "chest/truth"},
                {"name": "work", "mountPath": "/work", "readOnly": False},
                {"name": "tmp", "mountPath": "/tmp", "readOnly": False},
            ],
        )
    ],
    "volumes": [
        # one claim for studies and truth: one volume, two subPath mounts (the kubelet mounts no pod with two
        # volumes of one claim)
        {"name": "dataset", "persistentVolumeClaim": {"claimName": "imaging", "readOnly": True}},
        {"name": "input", "emptyDir": {}},
        {"name": "output", "emptyDir": {"sizeLimit": "5Gi"}},
        {"name": "work", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "3Gi"}},
    ],
}


def test_run_job_whole():
    val, algo, data, pol = run_objects()
    job = builders.run_job(val, algo, data, pol, "chest-v1-r3", 3, CONFIG, "2026-01-01T00:00:00Z", "https://10.0.0.1:6443")
    pod = decoded(job["spec"]["template"].pop("spec"))
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "chest-v1-r3",
            "namespace": "region",
            "labels": RUN_LABELS,
            "annotations": RUN_ANNOTATIONS,
            "ownerReferences": [owner("Validation", "chest-v1", "val-uid")],
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": 1900,  # the algorithm's 1800 s + 100 s slack
            "suspend": False,
            "template": {"metadata": {"labels": RUN_LABELS, "annotations": RUN_ANNOTATIONS}},
        },
    }
    assert pod == RUN_POD


def test_run_network_policy_whole_and_selecting_the_run_pod():
    val, algo, data, pol = run_objects()
    netpol = builders.run_network_policy(val, "chest-v1-r3")
    assert netpol == deny_all("chest-v1-r3", RUN_LABELS, "chest-v1-r3", owner("Validation", "chest-v1", "val-uid"))
    job = builders.run_job(val, algo, data, pol, "chest-v1-r3", 3, CONFIG)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_a_run_without_schedule_or_hash_has_no_such_annotations():
    val, algo, _, pol = run_objects()
    data = dataset(content_hash=None)
    job = builders.run_job(val, algo, data, pol, "chest-v1-r3", 3, CONFIG)
    assert job["metadata"]["annotations"] == {
        "lightbox.dev/run-number": "3",
        "lightbox.dev/validation-name": "chest-v1",
    }
    unverified = dataset(verified=False)
    job = builders.run_job(val, algo, unverified, pol, "chest-v1-r3", 3, CONFIG)
    assert "lightbox.dev/dataset-hash" not in job["metadata"]["annotations"]


def test_without_a_policy_the_scorer_suppresses_below_ten():
    val, algo, data, _ = run_objects()
    config = builders.scorer_config(val, algo, None)
    assert config.min_subgroup_size == 10
    assert builders.queue_name(val, None) is None


def test_an_algorithm_without_labels_gets_an_empty_list():
    val, _, data, pol = run_objects()
    algo = algorithm(task="segmentation", labels=None, positiveLabel=None)
    assert builders.scorer_config(val, algo, pol).labels == []


def test_overlapping_truth_is_refused_naming_the_dataset():
    val, algo, _, pol = run_objects()
    with pytest.raises(
        ValueError, match=r"^Dataset mixed: spec.groundTruth overlaps spec.studies; refusing to mount it$"
    ):
        builders.run_pod_spec(val, algo, dataset("mixed", studies="chest", truth="chest/truth"), pol, CONFIG)


PROBE_LABELS = {
    "lightbox.dev/component": "isolation-probe",
    "lightbox.dev/run": "lightbox-probe-default-1",
    "lightbox.dev/policy": "default",
}


def test_probe_pod_whole():
    pol = with_uid(policy(runtimeClassName="kata", nodeSelector={"gpu": "yes"}, tolerations=[TOLERATION]), "pol-uid")
    pod = builders.probe_pod(pol, "region", "lightbox-probe-default-1", CONFIG, "https://10.0.0.1:6443")
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "lightbox-probe-default-1",
            "namespace": "region",
            "labels": PROBE_LABELS,
            "annotations": {"lightbox.dev/policy-name": "default"},
            "ownerReferences": [owner("SandboxPolicy", "default", "pol-uid")],
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": POD_SECURITY,
            "runtimeClassName": "kata",
            "nodeSelector": {"gpu": "yes"},
            "tolerations": [{**TOLERATION, "value": ""}],
            "activeDeadlineSeconds": 120,
            "containers": [
                trusted(
                    "probe",
                    [
                        "lightbox", "probe",
                        "--api-server", "https://10.0.0.1:6443",
                        "--dns", "10.0.0.10:53",
                        "--outside", "192.0.2.1:443",
                        "--timeout", "2.5",
                        # the in-pod check's rule: CONFIG's 4 rounds within 20 s
                        "--clean-rounds", "4",
                        "--bound", "20.0",
                    ],
                    [TERMINATION_LOG, {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}, NODE_IP],
                )
            ],
        },
    }


def test_probe_name_and_network_policy_whole():
    assert builders.probe_name("default", 1700000000) == "lightbox-probe-default-1700000000"
    pol = with_uid(policy(), "pol-uid")
    netpol = builders.probe_network_policy(pol, "region", "lightbox-probe-default-1")
    labels = {"lightbox.dev/component": "isolation-probe", "lightbox.dev/policy": "default"}
    assert netpol == deny_all(
        "lightbox-probe-default-1", labels, "lightbox-probe-default-1", owner("SandboxPolicy", "default", "pol-uid")
    )
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= PROBE_LABELS.items()


VERIFY_LABELS = {
    "lightbox.dev/component": "dataset-verify",
    "lightbox.dev/run": "chest-2025-verify-g3",
    "lightbox.dev/dataset": "chest-2025",
}
VERIFY_ANNOTATIONS = {"lightbox.dev/dataset-name": "chest-2025", "lightbox.dev/generation": "3"}


def verify_dataset(options=()):
    data = with_uid(dataset(), "ds-uid")
    data.metadata["generation"] = 3
    data.spec.deidentification.options = list(options)
    return data


def test_verify_job_whole():
    data = verify_dataset(["retainUIDs", "cleanDescriptors"])
    job = builders.verify_job(data, "chest-2025-verify-g3", CONFIG)
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "chest-2025-verify-g3",
            "namespace": "region",
            "labels": VERIFY_LABELS,
            "annotations": VERIFY_ANNOTATIONS,
            "ownerReferences": [owner("Dataset", "chest-2025", "ds-uid")],
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": 1234,
            "suspend": False,
            "template": {
                "metadata": {"labels": VERIFY_LABELS, "annotations": VERIFY_ANNOTATIONS},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": POD_SECURITY,
                    "activeDeadlineSeconds": 1234,
                    "containers": [
                        trusted(
                            "verify",
                            [
                                "python",
                                "-m",
                                "lightbox.operator.verifystep",
                                "/data/studies",
                                "--option",
                                "retainUIDs",
                                "--option",
                                "cleanDescriptors",
                            ],
                            [
                                {"name": "LIGHTBOX_STUDIES_DIR", "value": "/data/studies"},
                                {"name": "TMPDIR", "value": "/tmp"},
                                TERMINATION_LOG,
                            ],
                            [
                                {
                                    "name": "studies",
                                    "mountPath": "/data/studies",
                                    "readOnly": True,
                                    "subPath": "chest/studies",
                                },
                                {"name": "tmp", "mountPath": "/tmp", "readOnly": False},
                            ],
                        )
                    ],
                    "volumes": [
                        {"name": "studies", "persistentVolumeClaim": {"claimName": "imaging", "readOnly": True}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "3Gi"}},
                    ],
                },
            },
        },
    }


def test_a_dataset_without_generation_is_generation_one():
    data = with_uid(dataset(), "ds-uid")
    job = builders.verify_job(data, "chest-2025-verify-g1", CONFIG)
    assert job["metadata"]["annotations"]["lightbox.dev/generation"] == "1"


def test_verify_network_policy_whole_and_selecting_the_verify_pod():
    # The verification pod reads the studies before anyone knows they are de-identified:
    # it must be as cut off as a vendor run.
    data = verify_dataset()
    netpol = builders.verify_network_policy(data, "chest-2025-verify-g3")
    labels = {"lightbox.dev/component": "dataset-verify", "lightbox.dev/dataset": "chest-2025"}
    assert netpol == deny_all(
        "chest-2025-verify-g3", labels, "chest-2025-verify-g3", owner("Dataset", "chest-2025", "ds-uid")
    )
    pod_labels = builders.verify_job(data, "chest-2025-verify-g3", CONFIG)["spec"]["template"]["metadata"]["labels"]
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_owner_reference_of_a_raw_object():
    raw = {"apiVersion": "lightbox.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "d", "uid": "u"}}
    assert builders.owner_reference(raw) == owner("Dataset", "d", "u")
    assert builders.owner_reference(raw, controller=False) == {**owner("Dataset", "d", "u"), "controller": False}


def test_label_value_trims_every_trailing_separator():
    # "b" * 53 + "-." cut at 54 characters ends "-": both separators must go.
    assert builders.label_value("b" * 52 + "-." + "c" * 20).startswith("b" * 52 + "-")
    assert not builders.label_value("b" * 52 + "-." + "c" * 20).startswith("b" * 52 + "--")
    assert builders.label_value("X" * 53 + "." + "c" * 20)[:54] == "X" * 53 + "-"


def test_tolerations_are_written_with_the_api_servers_field_names():
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
    pol = policy(tolerations=[toleration])
    pod = builders.probe_pod(with_uid(pol, "pol-uid"), "region", "p", CONFIG, "https://10.0.0.1:6443")
    assert pod["spec"]["tolerations"] == [{**toleration, "value": ""}]


def test_an_api_server_configured_for_probes_wins_over_the_operators_own():
    config = OperatorConfig(trusted_image=TRUSTED, probe_api_server="https://kubernetes.default.svc:443")
    check = builders.isolation_check_config(config, "https://10.0.0.1:6443")
    assert check.api_server == "https://kubernetes.default.svc:443"
    assert builders.isolation_check_config(CONFIG, None).api_server is None


def test_the_scorer_config_carries_the_protocol_and_the_policy_not_defaults():
    val = validation(bootstrap={"resamples": 500, "seed": 7, "level": "case"})
    algo = algorithm(operatingThreshold=0.3)
    config = builders.scorer_config(val, algo, policy(pooledEvidence=True))
    assert (config.operating_threshold, config.pooled_evidence) == (0.3, True)
    assert config.bootstrap.model_dump(by_alias=True) == {"resamples": 500, "seed": 7, "level": "case"}
    assert builders.scorer_config(val, algo, None).pooled_evidence is False  # no policy: no pooling
