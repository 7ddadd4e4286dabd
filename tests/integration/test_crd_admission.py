"""The real API server rejects bad manifests at `kubectl apply` time, naming the field."""

from __future__ import annotations

import json

import pytest
from manifests import INVALID, VALID, VALID_EDGES, invalid_manifest

pytestmark = pytest.mark.integration


def apply(kubectl, namespace, manifest):
    args = ["apply", "-f", "-"]
    if manifest["kind"] != "SandboxPolicy":
        args += ["-n", namespace]
    return kubectl(*args, input=json.dumps(manifest))


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_manifests_are_accepted(kubectl, namespace, kind):
    manifest = VALID[kind]()
    if kind == "SandboxPolicy":
        manifest["metadata"]["name"] = f"{namespace}-valid"
    result = apply(kubectl, namespace, manifest)
    assert result.returncode == 0, result.stderr
    if kind == "SandboxPolicy":
        kubectl("delete", "sandboxpolicy", manifest["metadata"]["name"])


def test_optional_fields_may_be_omitted(kubectl, namespace):
    manifest = VALID["Validation"]()
    del manifest["spec"]["acceptance"], manifest["spec"]["schedule"]
    result = apply(kubectl, namespace, manifest)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("acceptance", [{"metric": "auc", "bound": "lower", "comparison": ">=", "threshold": 0.5}]),
        ("algorithmRef", {"name": "another-model"}),
        ("metrics", ["auc"]),
        ("confidenceLevel", 0.9),
    ],
)
def test_the_protocol_of_an_existing_validation_cannot_change(kubectl, namespace, field, value):
    manifest = VALID["Validation"]()
    assert apply(kubectl, namespace, manifest).returncode == 0
    changed = json.loads(json.dumps(manifest))
    changed["spec"][field] = value
    result = apply(kubectl, namespace, changed)
    assert result.returncode != 0, f"changing spec.{field} was accepted"
    assert f"spec.{field}" in result.stderr and "create a new Validation" in result.stderr, result.stderr


def test_schedule_history_and_suspend_of_an_existing_validation_may_change(kubectl, namespace):
    manifest = VALID["Validation"]()
    assert apply(kubectl, namespace, manifest).returncode == 0
    manifest["spec"] |= {"schedule": "@weekly", "historyLimit": 3, "suspend": True}
    result = apply(kubectl, namespace, manifest)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("path", "value"),
    [(("run", "verdict"), "Failed"), (("run", "metrics", "auc", "value"), 0.99), (("algorithm", "version"), "1.3.0")],
)
def test_an_audit_record_cannot_be_changed(kubectl, namespace, path, value):
    manifest = VALID["AuditRecord"]()
    assert apply(kubectl, namespace, manifest).returncode == 0
    node = manifest["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    result = apply(kubectl, namespace, manifest)
    assert result.returncode != 0, f"changing spec.{'.'.join(path)} was accepted"
    assert "an AuditRecord cannot be changed once written" in result.stderr, result.stderr


@pytest.mark.parametrize(("case_id", "kind", "changes"), VALID_EDGES, ids=[c[0] for c in VALID_EDGES])
def test_values_at_the_edge_of_what_is_allowed_are_admitted(kubectl, namespace, case_id, kind, changes):
    manifest = invalid_manifest(kind, changes)
    if kind == "SandboxPolicy":
        manifest["metadata"]["name"] = f"{namespace}-{case_id}"[:63].rstrip("-.")
    result = apply(kubectl, namespace, manifest)
    assert result.returncode == 0, result.stderr
    if kind == "SandboxPolicy":
        kubectl("delete", "sandboxpolicy", manifest["metadata"]["name"])


def test_there_are_at_least_twenty_bad_inputs():
    assert len(INVALID) >= 20
    assert len({case_id for case_id, *_ in INVALID}) == len(INVALID)


@pytest.mark.parametrize(("case_id", "kind", "changes", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_rejected_with_a_message_naming_the_field(
    kubectl, namespace, case_id, kind, changes, expected
):
    manifest = invalid_manifest(kind, changes)
    if kind == "SandboxPolicy":
        manifest["metadata"]["name"] = f"{namespace}-{case_id}"[:63].rstrip("-.")
    result = apply(kubectl, namespace, manifest)
    assert result.returncode != 0, f"{case_id} was accepted"
    assert expected in result.stderr, result.stderr


def test_kubectl_explain_shows_the_model_descriptions(kubectl):
    result = kubectl("explain", "validations.spec")
    assert result.returncode == 0, result.stderr
    assert "Which algorithm on which dataset, scored how, and how often." in result.stdout
    assert "Cron schedule" in result.stdout
    field = kubectl("explain", "algorithms.spec.image")
    assert "pinned by digest" in field.stdout


def test_printer_columns_and_short_names(kubectl, namespace):
    assert apply(kubectl, namespace, VALID["Validation"]()).returncode == 0
    result = kubectl("get", "val", "-n", namespace)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header[:6] == ["NAME", "ALGORITHM", "DATASET", "PHASE", "VERDICT", "METRIC"]
    assert kubectl("get", "lightbox", "-n", namespace).returncode == 0
