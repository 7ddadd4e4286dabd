"""The chart's high-availability switch (docs/ha.md): off by default; on, two replicas with what they need."""

from __future__ import annotations

import secrets

import pytest
import yaml
from test_chart import CHART, REGION_VALUES, _can, helm, render  # noqa: F401  (helm is a fixture)

pytestmark = pytest.mark.integration

LEASE = "lightbox-operator"  # operator/leader.py DEFAULT_LEASE_NAME, which the Role names


def _deployment(docs: list[dict]) -> dict:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return deployment


def test_default_is_one_replica_without_a_lease(helm, namespace):
    docs = render(helm, namespace)
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in container["args"] if a.startswith("--leader")]
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert not [d for d in docs for rule in d.get("rules") or [] if "leases" in rule["resources"]]


def test_ha_runs_two_spread_replicas_electing_a_leader_in_the_release_namespace(helm, namespace):
    docs = render(helm, namespace, "--set", "ha.enabled=true")
    deployment = _deployment(docs)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    # a rolling update never takes both down; the new pod stands by until the old releases the Lease
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert "--leader-elect" in container["args"]
    assert f"--leader-election-namespace={namespace}" in container["args"]
    assert {"name": "LIGHTBOX_LEADER_IDENTITY", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container[
        "env"
    ]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    (budget,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert budget["metadata"]["namespace"] == namespace
    assert budget["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert budget["spec"]["maxUnavailable"] == 1

    required = _deployment(render(helm, namespace, "--set", "ha.enabled=true", "--set", "ha.podAntiAffinity=required"))
    (hard,) = required["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert hard["topologyKey"] == "kubernetes.io/hostname"
    # the user's own affinity replaces ours
    own = _deployment(
        render(
            helm,
            namespace,
            "--set",
            "ha.enabled=true",
            "--set",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
            "--set",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        )
    )
    assert set(own["spec"]["template"]["spec"]["affinity"]) == {"nodeAffinity"}


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("ha.replicas=1", "/ha/replicas"),
        ("ha.podAntiAffinity=always", "/ha/podAntiAffinity"),
        ("ha.enabled=yes", "/ha/enabled"),
    ],
)
def test_a_wrong_ha_value_is_refused_naming_it(helm, namespace, value, where):
    result = helm("template", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES), "--set", value, check=False)
    assert result.returncode != 0 and f"at '{where}'" in result.stderr, result.stderr


def test_the_operator_may_hold_its_lease_and_no_other(helm, kubectl, namespace):
    """The rendered Role, applied to the API server: the one Lease in the release namespace, nothing else."""
    release = f"ha{secrets.token_hex(3)}"
    out = helm("template", release, str(CHART), "-n", namespace, "-f", str(REGION_VALUES), "--set", "ha.enabled=true",
               "--set", f"watchNamespaces={{{namespace}}}", "--set", "runNamespaces=null",
               "--set", f"audit.namespace={namespace}", "--set", "audit.createNamespace=false").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    rbac = yaml.safe_dump_all(
        [d for d in docs if d["kind"] in ("Role", "RoleBinding") and "leader-election" in d["metadata"]["name"]]
    )
    # the whole rendering is accepted by the server, the PodDisruptionBudget included
    dry = kubectl("apply", "--dry-run=server", "-f", "-", input=out)
    assert dry.returncode == 0 and f"poddisruptionbudget.policy/{release}-operator" in dry.stdout, dry.stderr
    kubectl("apply", "--server-side", "-f", "-", input=rbac, check=True)
    operator = f"system:serviceaccount:{namespace}:{release}-operator"
    try:
        assert _can(kubectl, operator, "create", "leases.coordination.k8s.io", namespace)
        assert _can(kubectl, operator, "get", f"leases.coordination.k8s.io/{LEASE}", namespace)
        assert _can(kubectl, operator, "patch", f"leases.coordination.k8s.io/{LEASE}", namespace)
        for verb in ("get", "patch", "update", "delete"):
            assert not _can(kubectl, operator, verb, "leases.coordination.k8s.io/kube-controller-manager", namespace), (
                verb
            )
        assert not _can(kubectl, operator, "delete", f"leases.coordination.k8s.io/{LEASE}", namespace)
        for elsewhere in ("kube-system", "kube-node-lease", "default"):
            assert not _can(kubectl, operator, "create", "leases.coordination.k8s.io", elsewhere), elsewhere
            assert not _can(kubectl, operator, "patch", f"leases.coordination.k8s.io/{LEASE}", elsewhere), elsewhere
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=rbac)
