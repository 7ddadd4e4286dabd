"""The Helm chart: lint, render, and a server-side dry run against the real API server."""

from __future__ import annotations

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
        result = subprocess.run(
            [str(binary), *args, "--kubeconfig", str(kubeconfig)],
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
    rules = docs[("ClusterRole", "lb-operator")]["rules"]
    verbs = {verb for rule in rules if "auditrecords" in rule["resources"] for verb in rule["verbs"]}
    assert verbs == {"get", "create"}
    reader = docs[("ClusterRole", "lb-operator-audit-reader")]
    assert reader["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert reader["rules"] == [{"apiGroups": ["lightbox.dev"], "resources": ["auditrecords"], "verbs": ["get", "list", "watch"]}]


def test_missing_registries_or_unpinned_image_fail_with_a_clear_message(helm, namespace):
    no_registries = helm("template", "lb", str(CHART), "-n", namespace, check=False)
    assert no_registries.returncode != 0
    assert "sandboxPolicy.spec.allowedRegistries must list at least one registry" in no_registries.stderr
    unpinned = helm(
        "template", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES), "--set", "image.digest=latest", check=False
    )
    assert unpinned.returncode != 0 and "image.digest must be sha256" in unpinned.stderr


def test_server_side_dry_run_accepts_every_rendered_object(helm, kubectl, namespace):
    policy_name = f"{namespace}-policy"
    rendered = helm(
        "template", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES),
        "--set", f"sandboxPolicy.name={policy_name}", "--set", f"runNamespaces={{{namespace}-runs}}",
    ).stdout
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.returncode == 0, result.stderr
    for kind in ("deployment.apps/lb-operator", f"sandboxpolicy.lightbox.dev/{policy_name}", "clusterrole.rbac"):
        assert kind in result.stdout
    install = helm(
        "install", "lb", str(CHART), "-n", namespace, "-f", str(REGION_VALUES), "--dry-run=server",
        "--set", f"sandboxPolicy.name={policy_name}", "--set", "runNamespaces=null",
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
