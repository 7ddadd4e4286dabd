"""The sandbox pod as rendered: who sees which volume, under which security context."""

from __future__ import annotations

import json

import pytest
from factories import IMAGE, algorithm, dataset, policy, validation

from lightbox.api import run as layout
from lightbox.api.run import ScorerConfig, StagerConfig
from lightbox.operator import builders
from lightbox.operator.config import OperatorConfig

CONFIG = OperatorConfig(trusted_image="ghcr.io/lightbox-health/lightbox@sha256:" + "1" * 64)

# What every sandbox pod and container must run under, written out from the README (no
# network, no token, read-only root filesystem, non-root, no capabilities) and the vendor
# contract (uid/gid 65532): compared whole, so an added or weakened field shows.
POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def assert_confined(pod):
    """Pod-level confinement shared by runs, probes and dataset verification."""
    assert pod["securityContext"] == POD_SECURITY_CONTEXT
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["restartPolicy"] == "Never"
    assert not {"hostNetwork", "hostPID", "hostIPC", "serviceAccountName", "serviceAccount"} & set(pod)
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        assert container["securityContext"] == CONTAINER_SECURITY_CONTEXT, container["name"]
    for volume in pod.get("volumes", []):
        assert set(volume) <= {"name", "persistentVolumeClaim", "emptyDir"}, volume  # no hostPath
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["readOnly"] is True, volume


def _with_uid(obj, uid="uid-1"):
    obj.metadata["uid"] = uid
    return obj


def render(val=None, algo=None, data=None, pol=None, number=1):
    val = _with_uid(val or validation())
    return builders.run_job(
        val,
        algo or algorithm(),
        data or dataset(),
        pol if pol is not None else policy(),
        f"{val.metadata['name']}-r{number}",
        number,
        CONFIG,
    )


def containers(job):
    spec = job["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}


def mounts(container):
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def env(container):
    """Plain values; a downward-API entry maps to its valueFrom."""
    return {e["name"]: e["value"] if "value" in e else e["valueFrom"] for e in container.get("env", [])}


def test_job_basics_name_owner_deadline_and_no_retries():
    job = render()
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    assert job["metadata"]["name"] == "chest-v1-r1"
    assert job["metadata"]["namespace"] == "region"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "Validation",
        "name": "chest-v1",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["activeDeadlineSeconds"] == 1800  # the algorithm's timeout
    assert job["spec"]["activeDeadlineSeconds"] == 1800 + CONFIG.job_deadline_slack_seconds
    assert job["spec"]["suspend"] is False
    assert job["metadata"]["annotations"][layout.ANNOTATION_RUN_NUMBER] == "1"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        layout.LABEL_COMPONENT: "run",
        layout.LABEL_RUN: "chest-v1-r1",
        layout.LABEL_VALIDATION: "chest-v1",
    }


def test_containers_in_order_trusted_vendor_trusted():
    pod = render()["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["stage", "vendor"]
    assert [c["name"] for c in pod["containers"]] == ["score"]
    by_name = containers(render())
    assert by_name["stage"]["image"] == CONFIG.trusted_image
    assert by_name["stage"]["command"] == ["lightbox", "stage"]
    assert by_name["score"]["image"] == CONFIG.trusted_image
    assert by_name["score"]["command"] == ["lightbox", "score"]
    assert by_name["vendor"]["image"] == IMAGE
    assert "command" not in by_name["vendor"]  # the image's own entrypoint


def test_every_container_and_the_pod_are_restricted():
    job = render()
    pod = job["spec"]["template"]["spec"]
    assert_confined(pod)
    assert set(containers(job)) == {"stage", "vendor", "score"}


def test_vendor_sees_only_input_read_only_and_output_writable():
    vendor = containers(render())["vendor"]
    assert mounts(vendor) == {
        "input": {"name": "input", "mountPath": layout.INPUT_DIR, "readOnly": True},
        "output": {"name": "output", "mountPath": layout.OUTPUT_DIR, "readOnly": False},
    }
    # Exactly the contract's variables: directories, contract version, task, labels; scratch in /output.
    assert env(vendor) == {
        layout.INPUT_DIR_ENV: layout.INPUT_DIR,
        layout.OUTPUT_DIR_ENV: layout.OUTPUT_DIR,
        "LIGHTBOX_CONTRACT_VERSION": "v1",
        "LIGHTBOX_TASK": "classification",
        "LIGHTBOX_LABELS": '["normal", "nodule"]',
        "HOME": layout.OUTPUT_DIR,
        "TMPDIR": layout.OUTPUT_DIR,
    }


def _on_claims(studies_claim: str, truth_claim: str):
    data = dataset()
    data.spec.studies.claim_name = studies_claim
    data.spec.ground_truth.claim_name = truth_claim
    return data


def _claims_mounted(container, volumes):
    """(claim, subPath, mountPath, readOnly) of each claim the container mounts."""
    return sorted(
        (volumes[m["name"]]["persistentVolumeClaim"]["claimName"], m.get("subPath", ""), m["mountPath"], m["readOnly"])
        for m in container.get("volumeMounts", [])
        if "persistentVolumeClaim" in volumes[m["name"]]
    )


@pytest.mark.parametrize(("studies_claim", "truth_claim"), [("imaging", "imaging"), ("imaging", "labels")])
def test_only_the_scorer_mounts_the_truth_and_only_the_stager_the_studies(studies_claim, truth_claim):
    job = render(data=_on_claims(studies_claim, truth_claim))
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claimed = {n: _claims_mounted(c, volumes) for n, c in containers(job).items()}
    assert claimed == {
        "stage": [(studies_claim, "chest/studies", layout.STUDIES_DIR, True)],
        "vendor": [],
        "score": [(truth_claim, "chest/truth", layout.TRUTH_DIR, True)],
    }
    assert mounts(containers(job)["score"])["output"]["readOnly"] is True
    assert volumes["output"]["emptyDir"] == {"sizeLimit": "10Gi"}
    # The kubelet never mounts a pod with two volumes of one claim: one volume per claim, read-only.
    claims = [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert sorted(c["claimName"] for c in claims) == sorted({studies_claim, truth_claim})
    assert all(c["readOnly"] is True for c in claims)
    assert_confined(pod)


def test_env_names_point_at_the_mount_paths():
    by_name = containers(render())
    stage, score = env(by_name["stage"]), env(by_name["score"])
    assert stage[layout.STUDIES_DIR_ENV] == layout.STUDIES_DIR
    assert stage[layout.INPUT_DIR_ENV] == layout.INPUT_DIR
    assert stage[layout.WORK_DIR_ENV] == layout.WORK_DIR
    assert score[layout.TRUTH_DIR_ENV] == layout.TRUTH_DIR
    assert score[layout.OUTPUT_DIR_ENV] == layout.OUTPUT_DIR
    for step in (stage, score):
        assert step[layout.TERMINATION_LOG_ENV] == layout.TERMINATION_LOG_PATH
    # Each directory variable names a path the container actually mounts.
    for name, container in by_name.items():
        mounted = {m["mountPath"] for m in container["volumeMounts"]}
        for key, value in env(container).items():
            if key.endswith("_DIR"):
                assert value in mounted, (name, key)


def test_step_configs_come_from_the_models():
    val = validation(metrics=["auc", "sensitivity"], subgroups=["sex"], confidenceLevel=0.9)
    data = dataset()
    data.spec.deidentification.options = ["retainPatientCharacteristics"]
    by_name = containers(render(val=val, data=data, pol=policy(minSubgroupSize=25)))
    scorer = ScorerConfig.model_validate_json(env(by_name["score"])[layout.SCORER_CONFIG_ENV])
    assert scorer.task == "classification"
    assert scorer.positive_label == "nodule" and scorer.labels == ["normal", "nodule"]
    assert scorer.metrics == ["auc", "sensitivity"] and scorer.subgroups == ["sex"]
    assert scorer.min_subgroup_size == 25 and scorer.confidence_level == 0.9
    stager = StagerConfig.model_validate_json(env(by_name["stage"])[layout.STAGER_CONFIG_ENV])
    assert stager.deid_options == ["retainPatientCharacteristics"]
    # The stager refuses studies that are no longer the ones verified.
    assert stager.verified_content_hash == data.status.content_hash and stager.verified_content_hash


def test_vendor_resources_requests_equal_limits_with_gpus():
    vendor = containers(
        render(algo=algorithm(resources={"gpus": 2, "cpu": "4", "memory": "16Gi", "ephemeralStorage": "20Gi"}))
    )["vendor"]
    expected = {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "20Gi", "nvidia.com/gpu": "2"}
    assert vendor["resources"] == {"requests": expected, "limits": expected}
    no_gpu = containers(render(algo=algorithm(resources={"gpus": 0})))["vendor"]
    assert "nvidia.com/gpu" not in no_gpu["resources"]["limits"]
    for name in ("stage", "score"):
        trusted = containers(render())[name]["resources"]
        assert trusted["requests"] == trusted["limits"]
        assert "nvidia.com/gpu" not in trusted["limits"]


def test_policy_placement_runtime_class_node_selector_tolerations():
    pol = policy(
        runtimeClassName="gvisor",
        nodeSelector={"nvidia.com/gpu.present": "true"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    pod = render(pol=pol)["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "", "effect": "NoSchedule"}]
    bare = render(pol=policy())["spec"]["template"]["spec"]
    assert "runtimeClassName" not in bare and "nodeSelector" not in bare and "tolerations" not in bare


@pytest.mark.parametrize(
    ("policy_queue", "validation_queue", "expected"),
    [
        (None, None, None),
        ("gpu-queue", None, "gpu-queue"),
        ("gpu-queue", "team-queue", "team-queue"),
        (None, "team", "team"),
    ],
)
def test_kueue_label_and_suspend(policy_queue, validation_queue, expected):
    pol = policy(queueName=policy_queue) if policy_queue else policy()
    val = validation(queueName=validation_queue) if validation_queue else validation()
    job = render(val=val, pol=pol)
    assert job["metadata"]["labels"].get(builders.KUEUE_QUEUE_LABEL) == expected
    assert job["spec"]["suspend"] is (expected is not None)
    # The pod template does not carry the queue label: Kueue reads it from the Job.
    assert builders.KUEUE_QUEUE_LABEL not in job["spec"]["template"]["metadata"]["labels"]


def test_network_policy_denies_everything_for_the_run():
    val = _with_uid(validation())
    netpol = builders.run_network_policy(val, "chest-v1-r1")
    assert netpol["kind"] == "NetworkPolicy"
    assert netpol["metadata"]["name"] == "chest-v1-r1"
    assert netpol["spec"] == {
        "podSelector": {"matchLabels": {layout.LABEL_RUN: "chest-v1-r1"}},
        "policyTypes": ["Ingress", "Egress"],
    }
    assert netpol["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    job = render(val=val)
    assert job["spec"]["template"]["metadata"]["labels"][layout.LABEL_RUN] == "chest-v1-r1"


def test_long_names_fit_label_values():
    # Digests: first 8 hex digits of coreutils' sha256sum of the name (not the code's hashing).
    assert builders.label_value("v" * 200) == "v" * 54 + "-7f0dced7"
    assert builders.label_value("v" * 199) == "v" * 54 + "-09c6ca24"
    assert builders.label_value("v" * 64) == "v" * 54 + "-c354e929"
    assert builders.label_value("v" * 63) == "v" * 63  # the limit itself fits
    assert builders.label_value("short") == "short"
    # A kept part may not end in "." or "-" (label values must end alphanumeric).
    assert builders.label_value("a" * 53 + "." + "b" * 20) == "a" * 53 + "-faf921a0"


def test_probe_pod_is_confined_like_a_run():
    pol = _with_uid(policy(runtimeClassName="kata", nodeSelector={"gpu": "yes"}), "pol-uid")
    pod = builders.probe_pod(pol, "region", "lightbox-probe-default-1", CONFIG, "https://10.0.0.1:6443")
    spec = pod["spec"]
    assert_confined(spec)
    assert spec["runtimeClassName"] == "kata" and spec["nodeSelector"] == {"gpu": "yes"}
    (container,) = spec["containers"]
    command = container["command"]
    assert command[:2] == ["lightbox", "probe"]
    assert command[command.index("--api-server") + 1] == "https://10.0.0.1:6443"
    assert pod["metadata"]["labels"][layout.LABEL_COMPONENT] == "isolation-probe"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "SandboxPolicy"
    netpol = builders.probe_network_policy(pol, "region", "lightbox-probe-default-1")
    assert netpol["spec"]["podSelector"]["matchLabels"] == {layout.LABEL_RUN: "lightbox-probe-default-1"}
    assert netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_verify_job_reads_only_the_studies():
    data = _with_uid(dataset(), "ds-uid")
    data.metadata["generation"] = 3
    name = builders.verify_job_name("chest-2025", 3)
    assert name == "chest-2025-verify-g3"
    job = builders.verify_job(data, name, CONFIG)
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["labels"][layout.LABEL_COMPONENT] == "dataset-verify"
    assert job["spec"]["backoffLimit"] == 0
    (container,) = pod["containers"]
    assert {m["name"] for m in container["volumeMounts"]} == {"studies", "tmp"}
    assert all(v["name"] != "truth" for v in pod["volumes"])
    assert container["volumeMounts"][0]["readOnly"] is True
    assert_confined(pod)
    assert json.dumps(job)  # plain data all the way down
