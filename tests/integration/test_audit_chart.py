"""The chart's audit namespace on the real API server: the operator may only create, get and list
records there, and `helm uninstall` (which removes the run namespaces it made) leaves it and its
records in place."""

from __future__ import annotations

import secrets
import subprocess
import time
from datetime import UTC, datetime

import factories
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from lightbox.api.validation import RunRecord
from lightbox.devtools.binaries import ensure_helm
from lightbox.operator import audit
from lightbox.operator.crdgen import REPO_ROOT

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "lightbox"
REGION_VALUES = CHART / "ci" / "region-values.yaml"


def _can(kubectl, who: str, verb: str, namespace: str) -> bool:
    out = kubectl("auth", "can-i", verb, "auditrecords.lightbox.dev", "--as", who, "-n", namespace).stdout.strip()
    assert out in ("yes", "no"), out
    return out == "yes"


def test_helm_uninstall_leaves_the_audit_namespace_and_its_records(kubeconfig, kubectl, api_client, namespace):
    helm_binary = ensure_helm()

    def helm(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(helm_binary), *args, "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0, result.stderr
        return result

    release = f"lb{secrets.token_hex(3)}"
    trail = f"audit-{secrets.token_hex(3)}"
    runs = f"{namespace}-runs"[:63]
    helm("install", release, str(CHART), "-n", namespace, "-f", str(REGION_VALUES), "--skip-crds",
         "--set", "watchNamespaces=null", "--set", f"runNamespaces={{{runs}}}", "--set", f"audit.namespace={trail}",
         "--set", f"sandboxPolicy.name={release}-policy", "--set", f"sandboxPolicy.spec.namespaces={{{runs}}}")
    core = client.CoreV1Api(api_client)
    try:
        kept = core.read_namespace(trail)
        assert kept.metadata.annotations["helm.sh/resource-policy"] == "keep"
        operator = f"system:serviceaccount:{namespace}:{release}-operator"
        assert all(_can(kubectl, operator, verb, trail) for verb in ("create", "get", "list"))
        assert not any(_can(kubectl, operator, verb, trail) for verb in ("update", "patch", "delete"))

        v = factories.validation()
        v.metadata |= {"uid": "9e9e9e9e-0000-4000-8000-00000000c4a7", "namespace": runs}
        finished = RunRecord(name="val-r1", number=1, phase="Succeeded", finished_at=datetime(2026, 11, 30, tzinfo=UTC))
        body = audit.audit_record(v, finished, None, None, None, "op", audit_namespace=trail)
        custom = client.CustomObjectsApi(api_client)
        custom.create_namespaced_custom_object("lightbox.dev", "v1alpha1", trail, "auditrecords", body)

        helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the run namespace the chart made goes...
            try:
                core.read_namespace(runs)
            except ApiException as exc:
                assert exc.status == 404
                break
            time.sleep(1)
        else:
            pytest.fail(f"helm uninstall did not remove the run namespace {runs}")
        # ...the audit namespace and its record stay, unchanged.
        assert core.read_namespace(trail).status.phase == "Active"
        (record,) = custom.list_namespaced_custom_object("lightbox.dev", "v1alpha1", trail, "auditrecords")["items"]
        assert record["spec"] == body["spec"]
    finally:
        subprocess.run(
            [str(helm_binary), "uninstall", release, "-n", namespace, "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            timeout=120,
        )
        kubectl("delete", "namespace", trail, runs, "--ignore-not-found", "--wait=false")
