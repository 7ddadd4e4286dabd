"""Approvals by verified identity on the real API server (issue 12, item 1; docs/approvals.md).

Three people with client certificates signed by the cluster's CA: carol submits the
Algorithm (group radiology-qa, so her own approval would fill that group if it
counted), alice (radiology-qa) and bob (it-security) approve it. The chart's
ValidatingAdmissionPolicy is rendered with helm and applied as shipped.
"""

from __future__ import annotations

import datetime as dt
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client
from kubernetes import config as kconfig
from kubernetes.client.rest import ApiException
from operator_harness import (
    VENDOR,
    Operator,
    algorithm,
    apply,
    audit_records,
    dataset,
    delete_policy,
    finish_pod_as_kubelet,
    finished,
    get,
    image,
    jobs,
    mark_verified,
    pods_of_job,
    policy,
    validation,
    wait_for,
)

from lightbox.devtools.binaries import ensure_helm
from lightbox.devtools.controlplane import render_kubeconfig
from lightbox.operator.crdgen import REPO_ROOT

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "lightbox"
GROUP, VERSION = "lightbox.dev", "v1alpha1"
OTHER_DIGEST = "sha256:" + "2" * 64
PEOPLE = {"alice": "radiology-qa", "bob": "it-security", "carol": "radiology-qa"}


def _identity(control_plane, directory: Path, user: str, group: str) -> Path:
    """A kubeconfig for ``user`` in ``group``: a client certificate the cluster's CA signed (CN user, O group)."""
    pki = control_plane.pki
    ca_cert = x509.load_pem_x509_certificate(pki.ca_crt.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group), x509.NameAttribute(NameOID.COMMON_NAME, user)]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    crt, pem = directory / f"{user}.crt", directory / f"{user}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path = directory / f"{user}.kubeconfig"
    path.write_text(render_kubeconfig(control_plane.url, pki.ca_crt, crt, pem, user=user))
    return path


@pytest.fixture(scope="module")
def approval_policy(kubeconfig, kubectl):
    """The chart's approvals.yaml, rendered by helm and applied as is; removed afterwards."""
    release = f"ap{secrets.token_hex(3)}"
    rendered = subprocess.run(
        [str(ensure_helm()), "template", release, str(CHART), "-f", str(CHART / "ci" / "region-values.yaml"),
         "--kube-version", "1.34.4", "--show-only", "templates/approvals.yaml"],
        capture_output=True, text=True, timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert [d["kind"] for d in docs] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    kubectl("apply", "-f", "-", input=rendered.stdout, check=True)
    yield docs
    kubectl("delete", "-f", "-", "--ignore-not-found", input=rendered.stdout)


@pytest.fixture
def people(control_plane, api_client, namespace, tmp_path, approval_policy):
    """API clients of alice, bob and carol, who may write approvals and Algorithms in ``namespace``."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "reviewers"},
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": ["algorithmapprovals"],
                    "verbs": ["create", "get", "list", "update", "patch"],
                },
                {
                    "apiGroups": [GROUP],
                    "resources": ["algorithms"],
                    "verbs": ["create", "get", "list", "update", "patch"],
                },
            ],
        },
    )
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reviewers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reviewers"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user} for user in PEOPLE],
    })
    clients = {
        user: kconfig.new_client_from_config(str(_identity(control_plane, tmp_path, user, group)))
        for user, group in PEOPLE.items()
    }
    yield {user: client.CustomObjectsApi(api) for user, api in clients.items()}
    for api in clients.values():
        api.close()


def _approval(
    name: str, algorithm_name: str, approver: str, groups: list[str], digest: str, version: str = "1.0.0"
) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AlgorithmApproval",
        "metadata": {"name": name},
        "spec": {
            "algorithm": algorithm_name,
            "imageDigest": digest,
            "version": version,
            "approver": approver,
            "groups": groups,
        },
    }


def _create(api: client.CustomObjectsApi, namespace: str, plural: str, body: dict) -> dict:
    return api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def _refused(call) -> str:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status in (403, 422), caught.value
    return caught.value.body


def _submitted(name: str, submitter: str, digest: str = "sha256:" + "1" * 64) -> dict:
    body = algorithm(name, f"{VENDOR}/{name}@{digest}")
    body["spec"]["submittedBy"] = submitter
    return body


def _until_enforced(api: client.CustomObjectsApi, namespace: str) -> None:
    """A new policy takes effect once the API server has loaded it: wait until a forged approval is refused.
    A probe admitted before that names no Algorithm of the test, so it changes nothing."""

    def forged_refused() -> bool:
        probe = _approval(f"probe-{secrets.token_hex(3)}", "no-such-algorithm", "bob", [], "sha256:" + "0" * 64)
        try:
            _create(api, namespace, "algorithmapprovals", probe)
        except ApiException as exc:
            return exc.status in (403, 422) and "spec.approver must be your own user name" in exc.body
        return False

    wait_for(forged_refused, bool, 30, "the ValidatingAdmissionPolicy to be in force")


def test_the_api_server_refuses_another_name_foreign_groups_and_any_change(people, namespace):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    _until_enforced(alice, namespace)

    body = _refused(
        lambda: _create(
            alice, namespace, "algorithmapprovals", _approval("forged", "chest", "bob", ["it-security"], OTHER_DIGEST)
        )
    )
    assert "spec.approver must be your own user name, alice" in body
    body = _refused(
        lambda: _create(
            alice,
            namespace,
            "algorithmapprovals",
            _approval("borrowed", "chest", "alice", ["it-security"], OTHER_DIGEST),
        )
    )
    assert "spec.groups may list only groups the API server authenticated you in" in body
    made = _create(
        alice, namespace, "algorithmapprovals", _approval("mine", "chest", "alice", ["radiology-qa"], OTHER_DIGEST)
    )
    assert made["spec"]["approver"] == "alice"
    body = _refused(
        lambda: alice.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "algorithmapprovals", "mine", {"spec": {"version": "2.0.0"}}
        )
    )
    assert "cannot be changed" in body

    body = _refused(lambda: _create(carol, namespace, "algorithms", _submitted("chest", "alice")))
    assert "spec.submittedBy must be your own user name, carol" in body
    _create(carol, namespace, "algorithms", _submitted("chest", "carol"))
    # bob builds a new image: he becomes its submitter, so his own approval of it will not count.
    body = _refused(
        lambda: bob.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "algorithms", "chest", {"spec": {"image": f"{VENDOR}/chest@{OTHER_DIGEST}"}}
        )
    )
    assert "changing spec.image or spec.version makes you the submitter: set spec.submittedBy to bob" in body
    body = _refused(
        lambda: bob.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "algorithms", "chest", {"spec": {"submittedBy": "bob"}}
        )
    )
    assert "spec.submittedBy changes only with a new spec.image or spec.version" in body
    changed = bob.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "algorithms",
        "chest",
        {"spec": {"image": f"{VENDOR}/chest@{OTHER_DIGEST}", "submittedBy": "bob"}},
    )
    assert changed["spec"]["submittedBy"] == "bob"


def _conditions(obj: dict | None) -> dict[str, dict]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def test_two_approvals_from_two_people_admit_self_and_repeated_do_not_and_a_new_digest_withdraws_them(
    people, api_client, kubeconfig, kubectl, namespace, tmp_path
):
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    _until_enforced(alice, namespace)
    ns, pol = namespace, f"approvals-{namespace}"
    apply(kubectl, None, policy(pol, ns, isolationProbe={"required": False},
                                approvals={"required": 2, "distinctGroups": ["radiology-qa", "it-security"]}))
    _create(carol, ns, "algorithms", _submitted("classifier", "carol"))
    apply(kubectl, ns, dataset())
    mark_verified(api_client, ns, "chest")
    digest = "sha256:" + "1" * 64
    assert image("classifier").endswith(digest)
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        apply(kubectl, ns, validation("gated", "classifier"))
        allowed = lambda: _conditions(get(api_client, "algorithms", ns, "classifier")).get("Allowed", {})  # noqa: E731
        admitted = lambda: _conditions(get(api_client, "validations", ns, "gated")).get("Admitted", {})  # noqa: E731

        blocked = wait_for(
            admitted, lambda c: c.get("reason") == "NotApproved", 60, "the Validation blocked as not approved", operator
        )
        assert blocked["message"].startswith(
            "NotApproved: 0 of 2 approvals; needs one from group radiology-qa; needs one from group it-security;"
        )
        assert get(api_client, "validations", ns, "gated")["status"]["phase"] == "Blocked"

        # carol's own approval and alice's second one: only alice's first counts.
        _create(carol, ns, "algorithmapprovals", _approval("by-carol", "classifier", "carol", ["radiology-qa"], digest))
        _create(alice, ns, "algorithmapprovals", _approval("by-alice", "classifier", "alice", ["radiology-qa"], digest))
        _create(
            alice,
            ns,
            "algorithmapprovals",
            _approval("by-alice-again", "classifier", "alice", ["radiology-qa"], digest),
        )
        one = wait_for(
            allowed,
            lambda c: "a second approval by alice" in c.get("message", ""),
            60,
            "alice's approvals counted",
            operator,
        )
        assert one["status"] == "False" and one["reason"] == "NotApproved"
        assert one["message"].startswith("1 of 2 approvals; needs one from group it-security (not counted: ")
        assert "carol's own submission" in one["message"]
        assert jobs(api_client, ns) == []

        _create(bob, ns, "algorithmapprovals", _approval("by-bob", "classifier", "bob", ["it-security"], digest))
        wait_for(
            allowed, lambda c: c.get("status") == "True", 60, "the Algorithm allowed after two approvals", operator
        )
        (job,) = wait_for(lambda: jobs(api_client, ns), bool, 60, "the run's Job", operator)
        assert job["metadata"]["name"] == "gated-r1"
        pod = wait_for(lambda: pods_of_job(api_client, ns, "gated-r1"), bool, 60, "the run's pod", operator)[0]
        finish_pod_as_kubelet(api_client, ns, pod["metadata"]["name"], 0, "not a score report")
        wait_for(lambda: get(api_client, "validations", ns, "gated"), finished, 60, "the run to end", operator)
        (record,) = wait_for(lambda: audit_records(api_client, ns), bool, 60, "the run's audit record", operator)
        counted = record["spec"]["algorithm"]["approvals"]
        assert [(a["approver"], a["groups"], a["name"]) for a in counted] == [
            ("alice", ["radiology-qa"], "by-alice"), ("bob", ["it-security"], "by-bob")
        ]
        assert all(a["approvedAt"] for a in counted)

        # A new build: every approval names the old digest, so none counts and nothing new starts.
        carol.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "algorithms", "classifier", {"spec": {"image": f"{VENDOR}/classifier@{OTHER_DIGEST}"}}
        )
        withdrawn = wait_for(
            allowed, lambda c: c.get("status") == "False", 60, "approvals withdrawn by the new digest", operator
        )
        assert withdrawn["message"].startswith(
            "0 of 2 approvals; needs one from group radiology-qa; needs one from group it-security"
        )
        assert withdrawn["message"].count("approval of another image digest") == 4
        wait_for(admitted, lambda c: c.get("reason") == "NotApproved", 60, "the Validation blocked again", operator)
    finally:
        operator.stop()
        delete_policy(api_client, pol)
