"""The Helm chart: lint, render, and a server-side dry run against the real API server."""

from __future__ import annotations

import re
import secrets
import subprocess

import pytest
import yaml

from lightbox.devtools.binaries import ensure_helm
from lightbox.operator.crdgen import REPO_ROOT, check

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "lightbox"
REGION_VALUES = CHART / "ci" / "region-values.yaml"


@pytest.fixture(scope="module")
def helm(kubeconfig):
    binary = ensure_helm()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # `helm template` checks Chart.yaml's kubeVersion against v1.20 unless told the cluster's.
        kube_version = ["--kube-version", "1.34.0"] if args[:1] == ("template",) else []
        result = subprocess.run(
            [str(binary), *args, *kube_version, "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    return run


def render(helm, namespace: str, *extra: str) -> list[dict]:
    out = helm("template", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES), *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_chart_lints(helm):
    helm("lint", str(CHART), "-f", str(REGION_VALUES), "--strict")


def test_chart_carries_the_generated_crds():
    assert check((CHART / "crds",)) == []


def test_rendered_operator_is_locked_down_and_pinned(helm, namespace):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(helm, namespace)}
    deployment = docs[("Deployment", "lb-operator")]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "@sha256:" in container["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"--trusted-image={container['image']}" in container["args"]
    policy = docs[("SandboxPolicy", "region-default")]
    assert policy["spec"]["allowedRegistries"] == ["registry.vendor.example", "localhost:5000/lightbox"]
    run_namespace = docs[("Namespace", "radiology")]
    assert run_namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_operator_may_write_audit_records_but_never_change_or_delete_them(helm, namespace):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(helm, namespace)}
    roles = [
        d
        for d in docs.values()
        if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"].startswith("lb-operator")
    ]
    verbs = {
        verb
        for role in roles
        for rule in role["rules"]
        if "auditrecords" in rule["resources"]
        for verb in rule["verbs"]
        if role["metadata"]["name"] != "lb-operator-audit-reader"
    }
    # list: the audit namespace's Role, to find the head of a Validation's chain (templates/audit.yaml)
    assert verbs == {"get", "create", "list"}
    reader = docs[("ClusterRole", "lb-operator-audit-reader")]
    assert reader["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert reader["rules"] == [
        {"apiGroups": ["lightbox.dev"], "resources": ["auditrecords"], "verbs": ["get", "list", "watch"]}
    ]


def test_missing_registries_or_unpinned_image_fail_with_a_clear_message(helm, namespace):
    no_registries = helm("template", "lb", str(CHART), "-n", namespace, check=False)
    assert no_registries.returncode != 0
    assert "sandboxPolicy.spec.allowedRegistries must list at least one registry" in no_registries.stderr
    # A tag where the digest goes is refused by values.schema.json, naming the value ...
    tagged = helm(
        "template",
        "lb",
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(REGION_VALUES),
        "--set",
        "image.digest=latest",
        check=False,
    )
    assert tagged.returncode != 0 and "at '/image/digest': 'latest' does not match pattern" in tagged.stderr
    # ... and no digest at all (the default) by the template, saying why the image is pinned.
    unpinned = helm(
        "template", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES), "--set", "image.digest=", check=False
    )
    assert unpinned.returncode != 0 and "image.digest must be sha256" in unpinned.stderr


def test_server_side_dry_run_accepts_every_rendered_object(helm, kubectl, namespace):
    policy_name = f"{namespace}-policy"
    rendered = helm(
        "template", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES),
        "--set", f"sandboxPolicy.name={policy_name}", "--set", f"runNamespaces={{{namespace}-runs}}",
        # The run and audit Roles go into namespaces that exist (a dry run creates none)
        "--set", f"watchNamespaces={{{namespace}}}", "--set", f"audit.namespace={namespace}",
        "--set", "audit.createNamespace=false",
    ).stdout
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.returncode == 0, result.stderr
    for kind in ("deployment.apps/lb-operator", f"sandboxpolicy.lightbox.dev/{policy_name}", "clusterrole.rbac"):
        assert kind in result.stdout
    install = helm(
        "install", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES), "--dry-run=server",
        "--set", f"sandboxPolicy.name={policy_name}", "--set", "runNamespaces=null",
        # Another test's operator may have made the default audit namespace already (not Helm's to adopt).
        "--set", f"audit.namespace={namespace}", "--set", "audit.createNamespace=false",
    )
    assert "STATUS: pending-install" in install.stdout


def test_alert_rules_use_only_metrics_the_operator_exports(helm, namespace):
    import re

    from lightbox.operator.exporter import Exporter

    assert not [d for d in render(helm, namespace) if d["kind"] == "PrometheusRule"]  # off unless asked for
    (rule,) = [d for d in render(helm, namespace, "--set", "metrics.alerts=true") if d["kind"] == "PrometheusRule"]
    alerts = rule["spec"]["groups"][0]["rules"]
    exported = set()
    for family in Exporter().registry.collect():
        exported |= {family.name, f"{family.name}_total"} if family.type == "counter" else {family.name}
    used = {name for alert in alerts for name in re.findall(r"lightbox_[a-z_]+", alert["expr"])}
    assert used and used <= exported, used - exported
    # Prometheus, not Helm, fills in the labels.
    assert "{{ $labels.validation }}" in alerts[0]["annotations"]["summary"]
    # The decline alert watches real metric names, each one where higher is better.
    from typing import get_args

    from lightbox.api.results import MetricName

    (decline,) = [a for a in alerts if a["alert"] == "LightboxMetricDeclined"]
    watched = set(re.search(r'metric=~"([^"]+)"', decline["expr"]).group(1).split("|"))
    assert watched and watched <= set(get_args(MetricName)) - {"hd95", "brier", "ece"}, watched
    assert decline["expr"].rstrip().endswith("> 0.05") and "[30d]" in decline["expr"]


# -- RBAC: least privilege, asked of the real API server ---------------------------------

RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
# What every authenticated user may create (system:basic-user): reviews of one's own access.
SELF_REVIEWS = {"selfsubjectaccessreviews.authorization.k8s.io", "selfsubjectrulesreviews.authorization.k8s.io",
                "selfsubjectreviews.authentication.k8s.io"}
READ = {"get", "list", "watch"}


def _can(kubectl, who: str, verb: str, resource: str, namespace: str | None, subresource: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, "--as", who]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    if subresource:
        args += ["--subresource", subresource]
    result = kubectl(*args)
    answer = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert answer in ("yes", "no"), (args, result.stdout, result.stderr)
    return answer == "yes"


def _writable(kubectl, who: str, namespace: str) -> dict[str, set[str]]:
    """Every resource ``who`` may do more than read in ``namespace``, as the server lists it."""
    out = kubectl("auth", "can-i", "--list", "--as", who, "-n", namespace, check=True).stdout
    found: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        resource = line.split()[0] if line.split() else ""
        groups = re.findall(r"\[([^\]]*)\]", line)
        if not resource or resource.startswith("/") or not groups:
            continue
        verbs = set(groups[-1].split()) - READ
        if verbs:
            found[resource] = found.get(resource, set()) | verbs
    return found


@pytest.mark.parametrize("mode", ["watchNamespaces", "cluster-wide with runNamespaces"])
def test_the_operator_can_start_workloads_only_in_its_run_namespace(helm, kubectl, namespace, mode):
    release = f"rbac{secrets.token_hex(3)}"
    runs, audit = f"{namespace}-runs"[:63], f"{namespace}-audit"[:63]
    for made in (runs, audit):
        kubectl("create", "namespace", made, check=True)
    where = (["--set", f"watchNamespaces={{{runs}}}", "--set", "runNamespaces=null"] if mode == "watchNamespaces"
             else ["--set", "watchNamespaces=null", "--set", f"runNamespaces={{{runs}}}"])
    out = helm("template", release, str(CHART), "-n", namespace, "-f", str(REGION_VALUES), *where,
               "--set", f"audit.namespace={audit}", "--set", "audit.createNamespace=false").stdout
    rbac = yaml.safe_dump_all([d for d in yaml.safe_load_all(out) if d and d["kind"] in RBAC_KINDS])
    kubectl("apply", "--server-side", "-f", "-", input=rbac, check=True)
    operator = f"system:serviceaccount:{namespace}:{release}-operator"
    try:
        for resource in ("pods", "jobs.batch", "networkpolicies.networking.k8s.io"):
            assert _can(kubectl, operator, "create", resource, runs) and _can(
                kubectl, operator, "delete", resource, runs
            )
            for elsewhere in ("kube-system", "default", namespace):
                assert not _can(kubectl, operator, "create", resource, elsewhere), (resource, elsewhere)
                assert not _can(kubectl, operator, "delete", resource, elsewhere), (resource, elsewhere)
        # Audit records: created only in the audit namespace, changed and deleted nowhere.
        assert _can(kubectl, operator, "create", "auditrecords.lightbox.dev", audit)
        for elsewhere in (runs, "kube-system"):
            assert not _can(kubectl, operator, "create", "auditrecords.lightbox.dev", elsewhere)
        for verb in ("update", "patch", "delete"):
            for anywhere in (audit, runs):
                assert not _can(kubectl, operator, verb, "auditrecords.lightbox.dev", anywhere)
        assert _can(kubectl, operator, "patch", "validations.lightbox.dev", runs, "status")
        assert not _can(kubectl, operator, "patch", "validations.lightbox.dev", runs)  # the spec is the user's
        assert not _can(kubectl, operator, "create", "validations.lightbox.dev", runs)
        # Cluster-wide: reading Lightbox's kinds, and the policy's status; never the policy itself.
        assert _can(kubectl, operator, "list", "validations.lightbox.dev", None)
        # Approvals: read and watched (docs/approvals.md), never written by the operator.
        assert all(
            _can(kubectl, operator, verb, "algorithmapprovals.lightbox.dev", None) for verb in ("get", "list", "watch")
        )
        assert not any(
            _can(kubectl, operator, verb, "algorithmapprovals.lightbox.dev", runs)
            for verb in ("create", "update", "delete")
        )
        assert _can(kubectl, operator, "patch", "sandboxpolicies.lightbox.dev", None, "status")
        for verb in ("patch", "update", "delete", "create"):
            assert not _can(kubectl, operator, verb, "sandboxpolicies.lightbox.dev", None)
        # Events: in the run namespace, and in default for the cluster-scoped SandboxPolicies only.
        assert _can(kubectl, operator, "create", "events", runs) and _can(
            kubectl, operator, "create", "events", "default"
        )
        assert not _can(kubectl, operator, "create", "events", "kube-system")
        assert set(_writable(kubectl, operator, "default")) <= SELF_REVIEWS | {
            "sandboxpolicies.lightbox.dev/status",
            "events",
        }
        # Everything it may do beyond reading in kube-system, as the server lists it: the policy's
        # status (cluster-scoped) and the reviews every user may make of their own access.
        assert set(_writable(kubectl, operator, "kube-system")) <= SELF_REVIEWS | {
            "sandboxpolicies.lightbox.dev/status"
        }
        assert {"pods", "jobs.batch", "events"} <= set(_writable(kubectl, operator, runs))
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=rbac)
        kubectl("delete", "namespace", runs, audit, "--wait=false")


def test_cluster_wide_mode_grants_runs_only_where_told(helm, namespace):
    base = ["template", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES), "--set", "watchNamespaces=null"]
    docs = [d for d in yaml.safe_load_all(helm(*base, "--set", "runNamespaces={ward-a,ward-b}").stdout) if d]
    roles = sorted((d["kind"], d["metadata"].get("namespace")) for d in docs
                   if d["kind"] in ("Role", "RoleBinding") and d["metadata"]["name"] == "lb-operator-runs")
    assert roles == [("Role", "ward-a"), ("Role", "ward-b"), ("RoleBinding", "ward-a"), ("RoleBinding", "ward-b")]
    cluster_verbs = {v for d in docs if d["kind"] == "ClusterRole" for rule in d["rules"] for v in rule["verbs"]}
    assert cluster_verbs == {"get", "list", "watch", "patch"}  # patch: sandboxpolicies/status only
    patched = {
        r
        for d in docs
        if d["kind"] == "ClusterRole"
        for rule in d["rules"]
        if "patch" in rule["verbs"]
        for r in rule["resources"]
    }
    assert patched == {"sandboxpolicies/status"}
    nowhere = helm(*base, "--set", "runNamespaces=null", check=False)
    assert nowhere.returncode != 0 and "the operator needs namespaces to run in" in nowhere.stderr
    everywhere = [
        d
        for d in yaml.safe_load_all(
            helm(*base, "--set", "runNamespaces=null", "--set", "rbac.runObjectsClusterWide=true").stdout
        )
        if d
    ]
    (binding,) = [
        d
        for d in everywhere
        if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"].endswith("-runs-in-every-namespace")
    ]
    assert binding["roleRef"]["name"] == "lb-operator-runs-in-every-namespace"
    assert not [d for d in everywhere if d["kind"] == "Role" and d["metadata"]["name"] == "lb-operator-runs"]


def test_the_operator_watches_only_where_its_roles_let_it_act(helm, namespace):
    # Watching jobs and pods cluster-wide with namespaced Roles is refused (the in-cluster operator
    # crashed on the real node): the operator's namespaces follow the Roles.
    base = ["template", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES)]

    def watched(*extra: str) -> list[str]:
        docs = [d for d in yaml.safe_load_all(helm(*base, *extra).stdout) if d]
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return [a.removeprefix("--namespace=") for a in args if a.startswith("--namespace=")]

    assert watched("--set", "watchNamespaces={radiology}") == ["radiology"]
    assert watched("--set", "watchNamespaces=null", "--set", "runNamespaces={ward-a,ward-b}") == ["ward-a", "ward-b"]
    assert (
        watched(
            "--set", "watchNamespaces=null", "--set", "runNamespaces=null", "--set", "rbac.runObjectsClusterWide=true"
        )
        == []
    )
