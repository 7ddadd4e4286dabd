"""The operator keeps working when the API server stops accepting its token (issue 10 item 1).

The operator runs as a ServiceAccount, not as the admin: its kubeconfig names a
``tokenFile`` holding a token from the TokenRequest API bound to a Secret. Mid-run
the file is rewritten with a new token (what the kubelet does to a projected
token) and the first token's Secret is deleted, so the API server refuses it
from then on (checked here with a request of our own). A Validation created
after that must still get its Job, recorded in its status: the operator's own client reads
the file again on the 401, kopf logs in again through the same loader.
"""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import (
    Operator,
    apply,
    apply_sample,
    delete_policy,
    get,
    jobs,
    local_runner,
    runs_of,
    validation,
    wait_for,
)

ACCOUNT = "lightbox-operator"


def started(obj: dict[str, Any] | None) -> bool:
    """The operator made the run's Job and recorded that (a run is Queued until then)."""
    runs = runs_of(obj)
    return bool(runs) and runs[-1]["phase"] != "Queued"


def bound_token(core: Any, namespace: str, anchor: str) -> str:
    """A token for ACCOUNT that is valid only while the Secret ``anchor`` exists."""
    from kubernetes import client

    secret = core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=anchor)))
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": 3600,
            "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": anchor, "uid": secret.metadata.uid},
        },
    }
    return core.create_namespaced_service_account_token(ACCOUNT, namespace, request).status.token


def answer(server: str, ca: Path, token: str) -> int:
    """HTTP status of one authenticated request, to see what the API server thinks of ``token``."""
    context = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"{server}/api/v1/namespaces/default", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def operator_account(api_client, namespace):
    from kubernetes import client

    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    account = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=ACCOUNT))
    core.create_namespaced_service_account(namespace, account)
    binding = f"token-rotation-{uuid.uuid4().hex[:8]}"
    rbac.create_cluster_role_binding({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
    })
    yield core
    rbac.delete_cluster_role_binding(binding)


def test_operator_carries_on_after_its_token_is_revoked_and_the_file_rewritten(
    api_client, kubeconfig, kubectl, namespace, operator_account, claim, tmp_path
):
    ns, core = namespace, operator_account
    pol = f"rotation-{ns}"
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    server = cluster["server"]
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))

    token_file = tmp_path / "token"
    first = bound_token(core, ns, "token-anchor-1")
    token_file.write_text(first)
    own_kubeconfig = tmp_path / "operator.kubeconfig"
    own_kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": ACCOUNT, "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": ACCOUNT}}],
        "current-context": "operator",
    }))
    assert answer(server, ca, first) == 200

    get_val = lambda name: lambda: get(api_client, "validations", ns, name)  # noqa: E731
    operator = Operator(own_kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with local_runner(api_client, claim, tmp_path / "runner"):
            apply_sample(kubectl, ns, pol)
            apply(kubectl, ns, validation("before", "classifier"))
            wait_for(get_val("before"), started, 150, "the run before the rotation to start", operator)

            # The kubelet's rotation, then the old token's end: its bound Secret is gone.
            token_file.write_text(bound_token(core, ns, "token-anchor-2"))
            core.delete_namespaced_secret("token-anchor-1", ns)
            # The API server caches a token's verdict for up to 10 s: wait until it says no.
            refused = lambda status: status == 401  # noqa: E731
            wait_for(lambda: answer(server, ca, first), refused, 60, "the first token to be refused")

            apply(kubectl, ns, validation("after", "classifier"))
            wait_for(lambda: [j["metadata"]["name"] for j in jobs(api_client, ns)], lambda names: "after-r1" in names,
                     90, "the Job of the Validation created after the rotation", operator)
            # Recorded in status after its Job was made: a write with the new token too.
            wait_for(get_val("after"), started, 60, "the run after the rotation to be recorded as started", operator)
        assert sorted(j["metadata"]["name"] for j in jobs(api_client, ns)) == ["after-r1", "before-r1"]
        # It carried on because the first 401 made it read the file again (not, say, a restart).
        renewals = [line for line in operator.log.read_text().splitlines() if "credentials loaded again from" in line]
        assert renewals and "(HTTP 401)" in renewals[0], operator.tail()
    finally:
        operator.stop()
        delete_policy(api_client, pol)
