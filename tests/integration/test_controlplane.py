"""The test control plane is a real one: version, controllers, admission, RBAC, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from lightbox.devtools import binaries
from lightbox.devtools.controlplane import _proc_alive

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _restricted_container(name: str = "main", **extra) -> client.V1Container:
    return client.V1Container(
        name=name,
        image="registry.k8s.io/pause:3.10",
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            run_as_non_root=True,
            run_as_user=65532,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
        **extra,
    )


def _eventually(fn, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _gone(read) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_server_reports_expected_version(control_plane, api_client):
    info = client.VersionApi(api_client).get_code()
    if os.environ.get("KUBEBUILDER_ASSETS"):
        expected = binaries.binary_version(control_plane.binaries.kube_apiserver)
    else:
        expected = binaries.K8S_VERSION
    assert info.git_version == expected
    assert control_plane.version == expected
    major, minor = expected.lstrip("v").split(".")[:2]
    assert (info.major, info.minor) == (major, minor)
    assert control_plane.url.startswith("https://127.0.0.1:")


def test_job_controller_creates_pod_and_gc_removes_it(api_client, namespace):
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
                restart_policy="Never", containers=[_restricted_container(command=["/pause"])])),
        ),
    )
    batch.create_namespaced_job(namespace, job)

    def pods():
        return core.list_namespaced_pod(namespace, label_selector="batch.kubernetes.io/job-name=hello").items

    (pod,) = _eventually(pods, what="the job controller to create a pod")
    assert pod.metadata.owner_references[0].kind == "Job"
    assert pod.status.phase == "Pending"  # no node: nothing schedules or runs it
    assert pod.spec.node_name is None

    batch.delete_namespaced_job("hello", namespace, propagation_policy="Background")
    _eventually(lambda: not pods(), what="the garbage collector to delete the job's pod")


def test_garbage_collector_deletes_dependents(api_client, namespace):
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="dependent",
        owner_references=[client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner",
                                                  uid=owner.metadata.uid)])))
    core.delete_namespaced_config_map("owner", namespace)
    _eventually(lambda: _gone(lambda: core.read_namespaced_config_map("dependent", namespace)),
                what="the dependent ConfigMap to be garbage-collected")


def test_new_namespace_gets_default_serviceaccount_and_root_ca(api_client):
    core = client.CoreV1Api(api_client)
    name = f"sa-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        sa = _eventually(lambda: not _gone(lambda: core.read_namespaced_service_account("default", name))
                         and core.read_namespaced_service_account("default", name),
                         what="the default ServiceAccount")
        assert sa.metadata.name == "default"
        ca = _eventually(lambda: not _gone(lambda: core.read_namespaced_config_map("kube-root-ca.crt", name))
                         and core.read_namespaced_config_map("kube-root-ca.crt", name),
                         what="the kube-root-ca.crt ConfigMap")
        assert "BEGIN CERTIFICATE" in ca.data["ca.crt"]
    finally:
        core.delete_namespace(name)


def test_namespace_deletion_completes(api_client):
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    name = f"del-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"k": "v"}))
    core.create_namespaced_persistent_volume_claim(name, client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="data"),
        spec=client.V1PersistentVolumeClaimSpec(access_modes=["ReadWriteOnce"],
                                                resources=client.V1VolumeResourceRequirements(
                                                    requests={"storage": "1Mi"}))))
    batch.create_namespaced_job(name, client.V1Job(
        metadata=client.V1ObjectMeta(name="j"),
        spec=client.V1JobSpec(template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
            restart_policy="Never", containers=[_restricted_container()])))))
    core.delete_namespace(name)
    assert core.read_namespace(name).status.phase == "Terminating"
    _eventually(lambda: _gone(lambda: core.read_namespace(name)), timeout=90,
                what=f"namespace {name} to be deleted by the namespace controller")


def test_pod_security_rejects_privileged_pod_in_restricted_namespace(api_client, namespace):
    core = client.CoreV1Api(api_client)
    privileged = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="main", image="registry.k8s.io/pause:3.10",
            security_context=client.V1SecurityContext(privileged=True))]),
    )
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, privileged)
    assert err.value.status == 403
    body = json.loads(err.value.body)
    assert 'violates PodSecurity "restricted:latest"' in body["message"]
    assert "privileged" in body["message"]

    # The same namespace accepts a pod that meets the restricted profile.
    ok = client.V1Pod(metadata=client.V1ObjectMeta(name="restricted"),
                      spec=client.V1PodSpec(containers=[_restricted_container()]))
    assert core.create_namespaced_pod(namespace, ok).metadata.name == "restricted"


def test_serviceaccount_token_authenticates_and_rbac_applies(control_plane, api_client, namespace):
    core = client.CoreV1Api(api_client)
    tr = core.create_namespaced_service_account_token(
        "default", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])))
    cfg = client.Configuration()
    cfg.host = control_plane.url
    cfg.ssl_ca_cert = str(control_plane.pki.ca_crt)
    cfg.api_key = {"authorization": tr.status.token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(cfg) as sa_client:
        review = client.AuthenticationV1Api(sa_client).create_self_subject_review(
            client.V1SelfSubjectReview())
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:default"
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(sa_client).list_namespaced_secret(namespace)
        assert err.value.status == 403  # RBAC: the default ServiceAccount has no grants


def test_kubectl_fixture_talks_to_the_control_plane(kubectl, namespace):
    out = kubectl("get", "namespace", namespace, "-o", "jsonpath={.metadata.labels}", check=True)
    assert json.loads(out.stdout)["pod-security.kubernetes.io/enforce"] == "restricted"
    denied = kubectl("run", "priv", "-n", namespace, "--image=registry.k8s.io/pause:3.10", "--privileged")
    assert denied.returncode != 0 and "PodSecurity" in denied.stderr


def test_crds_are_applied_and_established(control_plane, api_client):
    files = sorted((REPO / "crds").glob("*.yaml"))
    if not files:
        pytest.skip("crds/ holds no generated CRDs yet (`lightbox crds` writes them)")
    names = [d["metadata"]["name"] for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    ext = client.ApiextensionsV1Api(api_client)
    for name in names:
        conds = {c.type: c.status for c in ext.read_custom_resource_definition(name).status.conditions}
        assert conds.get("Established") == "True", (name, conds)


def test_cli_up_detaches_and_down_stops(tmp_path):
    """`lightbox control-plane up` returns while the components keep running; `down` (another process) stops them."""
    workdir = tmp_path / "cp"
    cli = [sys.executable, "-m", "lightbox", "control-plane"]
    up = subprocess.run([*cli, "up", "--dir", str(workdir)], capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        assert f"kube-apiserver {control_plane_version()} ready at https://127.0.0.1:" in up.stdout
        state = json.loads((workdir / "state.json").read_text())
        pids = [c["pid"] for c in state["components"].values()]
        assert len(pids) == 3
        assert all(_proc_alive(pid) for pid in pids)  # still running after `up` exited

        env = subprocess.run([*cli, "env", "--dir", str(workdir)], capture_output=True, text=True, check=True)
        assert env.stdout.strip() == f"export KUBECONFIG={workdir / 'kubeconfig'}"
        status = subprocess.run([*cli, "status", "--dir", str(workdir)], capture_output=True, text=True)
        assert status.returncode == 0 and status.stdout.startswith("ready:"), status.stdout

        again = subprocess.run([*cli, "up", "--dir", str(workdir)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        down = subprocess.run([*cli, "down", "--dir", str(workdir)], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not any(_proc_alive(pid) for pid in pids)
    after = subprocess.run([*cli, "status", "--dir", str(workdir)], capture_output=True, text=True)
    assert after.returncode == 1


def control_plane_version() -> str:
    if os.environ.get("KUBEBUILDER_ASSETS"):
        return binaries.binary_version(binaries.ensure_binaries().kube_apiserver)
    return binaries.K8S_VERSION
